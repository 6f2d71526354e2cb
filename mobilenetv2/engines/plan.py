"""Lower a float32 model to a plan of fused C kernel calls for one input shape.

Two lifetimes, as XNNPACK's create / reshape split them:
- ``PackedWeights`` (once per weights version of a model, shared by every input shape): batch
  norms folded into the convolutions before them, pointwise and stem weights packed, depthwise
  weights aligned;
- ``Plan`` (once per input shape, cheap): ZeroPadding + depthwise + BN + ReLU6 fused into one
  call, the residual add fused into the projecting pointwise conv, every activation buffer
  allocated once and reused as soon as no later op reads it, the schedule of the threads.
  A plan holds no thread: it runs on the model's ``pool.Pool``.
Running a plan allocates nothing but the returned output.
"""
import mmap
import os

import numpy as np

from mobilenetv2.network import arch
from mobilenetv2.network import layers as L
from mobilenetv2.engines import machine
from mobilenetv2.engines import native
from mobilenetv2.engines.c_kernels import fold_batchnorm, resize_scales
from mobilenetv2.errors import ArgumentError


ALIGN = 64  # bytes: a cache line, so no 32-byte vector load of a buffer straddles two lines


def aligned_empty(size):
    """A flat float32 array of ``size`` elements whose data starts on an ALIGN-byte boundary."""
    raw = np.empty(size * 4 + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + size * 4].view(np.float32)


def huge_pages():
    """Bytes of the huge page a _Slab asks for, or None: where the kernel offers transparent huge
    pages (machine.HUGE_PAGE), Python can ask for them (mmap.MADV_HUGEPAGE, Linux) and
    $MNV2_HUGE_PAGES is not 0 (the sanitizer runs set it, so each array is its own allocation)."""
    if os.environ.get("MNV2_HUGE_PAGES", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    return machine.HUGE_PAGE if hasattr(mmap, "MADV_HUGEPAGE") else None


class _Slab:
    """ALIGN-byte aligned float32 arrays carved one after another, in the order they are asked
    for, from anonymous mappings that start on a huge-page boundary and ask the kernel to back
    them with transparent huge pages (madvise).  The plan streams a model's packed weights (14 MB
    for 1.0_224) from L3 or memory on every call: on 4 KB pages that is 3,500 pages, more than the
    second-level TLB covers; on 2 MB pages it is 7.  Without huge pages (huge_pages() None) each
    array is its own NumPy allocation.  A mapping lives while any array carved from it does."""

    CHUNK_PAGES = 4  # a mapping holds at least this many huge pages

    def __init__(self, huge_page=None, expect_bytes=0):
        self.huge_page = huge_page
        self.expect_bytes = expect_bytes  # the first mapping's size, if bigger
        self._base = None  # uint8 view of the current mapping, from its first huge-page boundary
        self._used = 0
        self.mappings = 0

    def empty(self, size):
        if not self.huge_page:
            return aligned_empty(size)
        nbytes = -(-size * 4 // ALIGN) * ALIGN
        if self._base is None or self._used + nbytes > self._base.size:
            page = self.huge_page
            want = max(nbytes, self.CHUNK_PAGES * page, self.expect_bytes if not self.mappings else 0)
            length = -(-want // page) * page
            try:
                m = mmap.mmap(-1, length + page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            except OSError:  # no mapping to be had (a memory limit): plain arrays from here on
                self.huge_page = None
                return aligned_empty(size)
            raw = np.frombuffer(m, np.uint8)
            start = -raw.ctypes.data % page
            try:
                m.madvise(mmap.MADV_HUGEPAGE, start, length)
            except OSError:  # refused (a kernel or seccomp policy): 4 KB pages, still correct
                pass
            self._base, self._used = raw[start:start + length], 0
            self.mappings += 1
        out = self._base[self._used:self._used + size * 4].view(np.float32)
        self._used += nbytes
        return out

    def copy(self, a):
        """A C-contiguous float32 copy of ``a`` carved from the slab."""
        out = self.empty(a.size).reshape(a.shape)
        out[...] = a
        return out


def _pack(w, bias, slab):
    """A [cin, cout] kernel and its bias in the pointwise kernel's packed layout, 64-byte aligned,
    carved from ``slab``."""
    lib, ptr = native.lib, native.as_float_ptr
    cin, cout = w.shape
    w, bias = np.ascontiguousarray(w, np.float32), np.ascontiguousarray(bias, np.float32)
    packed = slab.empty(lib.f32_pointwise_packed_floats(cin, cout))
    lib.f32_pointwise_pack(ptr(w), ptr(bias), cin, cout, ptr(packed))
    return packed


BALANCE_THREADS = machine.CORES  # the thread count the row-or-panel choice balances for (set_threads may differ)
WEIGHTS_CACHED_BYTES = machine.L2 // 2  # pointwise weights that stay in L2 beside the rows they meet


def _busiest_share(widths, threads=None):
    """The largest share of the total work one thread gets when ``threads`` (BALANCE_THREADS, read
    at the call, so a caller that sets it plans as on another machine) split the items of these
    widths as the C plan does (items [n t / T, n (t + 1) / T) to thread t)."""
    threads = BALANCE_THREADS if threads is None else threads
    n, total = len(widths), sum(widths)
    return max(sum(widths[n * t // threads:n * (t + 1) // threads]) for t in range(threads)) / total


def _by_panels(rows, image_rows, cin, cout):
    """Whether threads should share a pointwise layer's output channels rather than its image
    rows: when its weights are too big to stay in L2 and outweigh its input (each thread then
    streams only its share of the weights: the 7x7 layers, the dense head), or when its image rows
    split less evenly than its 16-channel panels (a 3-row map)."""
    if cin * cout * 4 > WEIGHTS_CACHED_BYTES and cout > rows:
        return 1
    panels = [min(16, cout - 16 * p) for p in range(-(-cout // 16))]
    return int(_busiest_share(panels) < _busiest_share([1] * image_rows))


def _span(a):
    """The bytes [start, end) an array occupies."""
    start = a.__array_interface__["data"][0]
    return start, start + a.nbytes


def _overlaps(a, b):
    return a[0] < b[1] and b[0] < a[1]


def _row_split(op):
    """How an op's output rows (or pixels) are shared among threads: equal keys, equal ranges per
    thread."""
    if op.get("split_pixels"):
        return op["n"], "pixels", op["oh"] * op["ow"]
    if not op.get("split_rows") or op.get("split_panels"):
        return None
    return op["n"], op["split_rows"]


def _mark_pixel_splits(ops):
    """Split a depthwise conv by each image's pixels rather than its rows, and the pointwise convs
    that follow it on its output at the same size (the project, the next block's expand): a 14-row
    map's ranges of rows on 8 threads are 2 and 1 rows, its 196 pixels 24 and 25.  The chain keeps
    one split, so it still needs no barrier inside (_mark_syncs).  Not a fused block (its ring
    of expanded rows is cut by rows) or a dilated depthwise conv."""
    lib, prev = native.lib, None
    for op in ops:
        chained = (prev is not None and op["kind"] == lib.MNV2_OP_POINTWISE and not op.get("split_panels")
                   and not op.get("batch_rows") and op["reads"][0] == prev["writes"]
                   and (op["n"], op["oh"] * op["ow"]) == (prev["n"], prev["oh"] * prev["ow"]))
        if (op["kind"] == lib.MNV2_OP_DWCONV and op.get("split_rows")) or chained:
            op["split_pixels"] = 1
            prev = op
        else:
            prev = None


def _channel_split(op):
    """How an op's channels are shared among threads, for the ops whose share reads or writes only
    its own channels of every pixel: a pointwise op split by output panels, a global pooling op
    (split by the same 16-channel groups, csrc/plan.c); equal keys, equal channels per thread."""
    lib = native.lib
    if not op.get("split_panels") or op.get("batch_rows"):
        return None
    if op["kind"] == lib.MNV2_OP_POINTWISE:
        return op["n"], lib.f32_pointwise_panels(op["cout"])
    if op["kind"] in (lib.MNV2_OP_AVGPOOL, lib.MNV2_OP_MAXPOOL):
        return op["n"], lib.f32_pointwise_panels(op["c"])  # as run_pool_channels splits them
    return None


def _mark_syncs(ops):
    """Clear the barrier before each pointwise conv that needs none: its inputs written since the
    last barrier were written with its own row split (so by the same thread, row for row), and
    its output overlaps nothing read or written since that barrier.  A pointwise conv after a
    depthwise or another pointwise conv at the same resolution thus follows without waiting.  The
    same for a global pooling op after a pointwise conv split by the same channels (Conv_1 and
    the pooling before the head): each thread pools the channels it computed."""
    lib = native.lib
    since = []  # ops run since the last barrier
    for op in ops:
        pooling = op["kind"] in (lib.MNV2_OP_AVGPOOL, lib.MNV2_OP_MAXPOOL)
        split = _channel_split if pooling else _row_split
        key = split(op)
        free = (pooling or op["kind"] == lib.MNV2_OP_POINTWISE) and key is not None and since and all(
            split(prev) == key or not any(_overlaps(prev["writes"], r) for r in op["reads"])
            for prev in since) and not any(
            _overlaps(op["writes"], s) for prev in since for s in prev["reads"] + [prev["writes"]])
        op["sync"] = int(not free)
        since = since + [op] if free else [op]
    # When groups of threads take whole images through every op (csrc/plan.c), a group only reads
    # what it wrote itself (within the group, "sync" above applies); the one hazard between groups
    # is an op writing over a reused buffer that the other groups may still be reading or writing
    # (their images of an earlier tensor lie elsewhere in it).
    since = []
    for op in ops:
        clash = any(_overlaps(op["writes"], s) for prev in since for s in prev["reads"] + [prev["writes"]])
        op["sync_images"] = int(clash)
        since = [op] if clash else since + [op]


def _mark_panel_pixels(ops):
    """Let the threads of a pointwise conv split by output panels share a panel's pixels too
    (mnv2_op.panel_pixels; csrc/plan.c cuts the panels into chunks only where they do not share
    out evenly: a 7x7 project of 10 panels on 8 threads), unless the op after it in the same stage
    reads by its channel split (the pooling after Conv_1, _mark_syncs)."""
    lib = native.lib
    for i, op in enumerate(ops):
        ends_stage = i + 1 == len(ops) or ops[i + 1]["sync"]
        by_panels = op["kind"] == lib.MNV2_OP_POINTWISE and op.get("split_panels") and not op.get("batch_rows")
        if by_panels and ends_stage:
            op["panel_pixels"] = 1


def _checks_its_input(op):
    """Whether op, reading the network input, checks every value of it for NaN and inf as it runs
    (mnv2_op.nonfinite): the stem does, row by row; so does a stem fused into a block whose
    depthwise conv reads every stem row (its last one checks the image rows below it)."""
    lib = native.lib
    if op["kind"] == lib.MNV2_OP_STEM:
        return True
    if op["kind"] != lib.MNV2_OP_BLOCK or op.get("stem_w") is None:
        return False
    last_read = (op["oh"] - 1) * op["stride"] + 2 * op.get("dilation", 1) - op["pad_top"]
    return last_read >= op["h"] - 1


def _mark_prefetch(ops):
    """Point each pointwise op at the packed weights of the next pointwise op, whose start its
    kernel prefetches as its own last panels compute (f32_pointwise_then: as far as those tiles
    reach; an op split by panels prefetches, per share, what that share of the next op reads
    first).  The weights of the 7x7 layers, Conv_1 and the head come from L3 or memory, and the
    first of them otherwise arrive only when their op starts."""
    lib, nxt = native.lib, None
    for op in reversed(ops):
        if op["kind"] != lib.MNV2_OP_POINTWISE:
            continue
        if nxt is not None:
            op["after"] = nxt["w"]
            op["after_floats"] = lib.f32_pointwise_packed_floats(nxt["c"], nxt["cout"])
            op["after_cin"], op["after_cout"] = nxt["c"], nxt["cout"]
            op["after_by_panels"] = int(bool(nxt.get("split_panels")))
        nxt = op


# From this machine's caches (machine.py; measured first on a 512 KB-L2 core as 512, 256, 256 KB):
FUSE_MIN_BYTES = machine.L2   # fuse a block whose expanded tensor is bigger than this (L2)
FUSE_MIN_ROWS = 8             # ... and has this many output rows to share among threads
FUSE_SMALL_MIN_BYTES = 2 * machine.L1D  # or than this, with FUSE_MIN_ROWS rows per core (_worth_fusing)
BAND_SCRATCH_BYTES = machine.L2 // 2  # a thread's ring of expanded rows plus one band of output
FUSE_MAX_WEIGHT_BYTES = machine.L2 // 2  # expand + project weights, read again for every band
MAX_BAND = 4
STEM_FUSE_MIN_BYTES = machine.L1D  # fuse the stem into the first block when its output is bigger (L1d)


def _worth_fusing(dw):
    """Whether keeping a block's expanded tensor (the input of depthwise op ``dw``) out of memory
    pays: it is bigger than L2 (FUSE_MIN_BYTES), or bigger than twice L1d (FUSE_SMALL_MIN_BYTES)
    with FUSE_MIN_ROWS output rows per core, so that splitting the rows among the cores leaves
    each thread's halo of recomputed expanded rows small.  On Zen 5 (48 KB L1d, 1 MB L2, 2 cores)
    the second clause fuses 1.0_224's 28x28 blocks (602 KB expanded): whole plan 0.987x at 1
    thread, 0.981x at 2; 0.5_160 0.975x / 0.951x; 1.4_224 0.992x / 0.984x (6 pairs of processes
    each, benchmarks/README.md).  Fusing the 14x14 blocks as well (no rows clause) gained about as
    much at 1 thread but lost at 2 (0.5_160 1.12x), where each thread's 7 rows recompute 2 more."""
    size = 4 * dw["n"] * dw["h"] * dw["w_"] * dw["c"]
    return size > FUSE_MIN_BYTES or (size > FUSE_SMALL_MIN_BYTES and dw["oh"] >= FUSE_MIN_ROWS * machine.CORES)


def _ring_rows(dw, band):
    """Expanded input rows one band of ``band`` output rows reads (2 d + 1 for one row at dilation d)."""
    return (band - 1) * dw["stride"] + 2 * dw.get("dilation", 1) + 1


def _band(dw):
    """Output rows a fused block computes at a time: the most (up to MAX_BAND) whose scratch fits.
    Where even one row's ring overflows the scratch budget (a dilated block: 2 d + 1 rows of a wide
    expansion), the ring lives in L3 whatever the band: then the most rows, so the project reads
    its weights least often (measured on the 513 segmentation model: bands of 2-4 rows ~5 %
    faster than bands of 1)."""
    def scratch(band):
        return 4 * (_ring_rows(dw, band) * dw["w_"] + band * dw["ow"]) * dw["c"]
    if scratch(1) > BAND_SCRATCH_BYTES:
        return MAX_BAND
    for band in range(MAX_BAND, 1, -1):
        if scratch(band) <= BAND_SCRATCH_BYTES:
            return band
    return 1


def _weights_pay(weight_bytes, dw, band):
    """Whether a fused block's expand + project weights, read again for every band, cost less than
    the memory traffic fusing saves: they stay in L2 (FUSE_MAX_WEIGHT_BYTES), or they are no more
    than one band's expanded rows make in the four passes the unfused ops give them (the expand
    writes them, the depthwise conv reads them and writes its output, the project reads that)."""
    return weight_bytes <= FUSE_MAX_WEIGHT_BYTES or weight_bytes <= 4 * 4 * band * dw["ow"] * dw["c"]


def _read_later(ops, span):
    """Whether one of ``ops`` (in order) reads memory of ``span`` before one writes over it."""
    for op in ops:
        if any(_overlaps(r, span) for r in op["reads"]):
            return True
        if _overlaps(op["writes"], span):
            return False
    return False


def _fusable_stem(stem, d, later):
    """Whether the stem op ``stem`` can fill the ring of the fused block whose depthwise op is
    ``d`` (a block without expansion), ``later`` the ops after that depthwise conv: the depthwise
    conv is the stem's one reader, and the stem's output is bigger than L1d (STEM_FUSE_MIN_BYTES):
    written whole it would leave L1 and come back for the depthwise conv, and where other work ran
    since the last call (a benchmark's peers, an application) its buffer is cold, every line
    fetched before it is written.  Measured on the Zen 5 (48 KB L1d, 1 MB L2), 1 thread, stem +
    first block fused vs separate: 1.0_224 219 vs 252 us warm, 225 vs 319 us cold; 0.35_96 (147 KB
    of stem output, inside L2) 27.7 vs 27.1 us warm, 43 vs 56 us cold; every variant between as
    fast warm and faster cold.  Below L1d the separate stem's output stays in L1, and the fused
    op would still recompute each thread's halo rows."""
    return stem["kind"] == native.lib.MNV2_OP_STEM and stem["writes"] == d["reads"][0] and \
        stem["n"] == d["n"] and 4 * stem["n"] * d["h"] * d["w_"] * d["c"] > STEM_FUSE_MIN_BYTES and \
        not _read_later(later, stem["writes"])


def _fuse_blocks(ops, labels):
    """Replace expand -> depthwise -> project (or depthwise -> project, for the first block) by
    one _BLOCK op where the expanded tensor is big enough that keeping it out of memory pays;
    the first block also takes in the stem before it (_fusable_stem)."""
    lib, null = native.lib, native.ffi.NULL
    out, out_labels, i = [], [], 0
    while i < len(ops):
        group = None
        for start in (i, i - 1):  # with an expansion (ops[i] expands), or without
            e = ops[start] if start == i else None
            d, p = (ops[i + 1], ops[i + 2]) if e is not None and i + 2 < len(ops) else \
                (ops[i], ops[i + 1]) if e is None and i + 1 < len(ops) else (None, None)
            if d is None or d["kind"] not in (lib.MNV2_OP_DWCONV, lib.MNV2_OP_DWCONV_DILATED) or \
                    p["kind"] != lib.MNV2_OP_POINTWISE:
                continue
            # (the expand's and project's own split, rows or panels, no longer matters: the fused
            # op shares its output rows among the threads)
            if e is not None and not (e["kind"] == lib.MNV2_OP_POINTWISE and e["relu6"] and
                                      e["residual"] == null and e["writes"] == d["reads"][0]):
                continue
            # the stem before a block without expansion comes in too where _fusable_stem says so,
            # whatever the size of its output (the block's input): that rule is the stem's own
            stem = ops[i - 1] if e is None and out and out[-1] is ops[i - 1] and \
                _fusable_stem(ops[i - 1], d, ops[i + 1:]) else None
            if not (d["relu6"] and p["reads"][0] == d["writes"] and d["oh"] >= FUSE_MIN_ROWS and
                    (stem is not None or _worth_fusing(d))):
                continue
            weights = d["c"] * p["cout"] + (e["c"] * d["c"] if e is not None else 0)
            if not _weights_pay(4 * weights, d, _band(d)):
                continue
            group = (e, d, p, stem)
            break
        if group is None:
            out.append(ops[i])
            out_labels.append(labels[i])
            i += 1
            continue
        e, d, p, stem = group
        first = e if e is not None else d
        n_fused = 3 if e is not None else 2
        fused_labels = labels[i - 1 if stem is not None else i:i + n_fused]
        if stem is not None:
            out.pop()
            out_labels.pop()
            first = stem
        out.append(dict(
            kind=lib.MNV2_OP_BLOCK, relu6=p["relu6"], x=first["x"], y=p["y"],
            w=e["w"] if e is not None else null, bias=null, residual=p["residual"],
            dw_w=d["w"], dw_bias=d["bias"], proj_w=p["w"], n=d["n"], h=d["h"], w_=d["w_"],
            c=first["c"], ce=d["c"], cout=p["cout"], stride=d["stride"], pad_top=d["pad_top"],
            pad_left=d["pad_left"], oh=d["oh"], ow=d["ow"], split_rows=d["oh"], split_panels=0,
            band=_band(d), dilation=d.get("dilation", 1), sync=1, reads=[first["reads"][0]] + p["reads"][1:], writes=p["writes"],
            layers=fused_labels))
        if stem is not None:  # the ring's rows come from the stem, the op's input is the image
            out[-1].update(c=d["c"], stem_w=stem["w"], stem_h=stem["h"], stem_w_=stem["w_"],
                           stem_pad_top=stem["pad_top"], stem_pad_left=stem["pad_left"],
                           stem_relu6=stem["relu6"])
        out_labels.append(labels[i + n_fused - 1])  # the block's project layer
        i += n_fused
    return out, out_labels


class PackedWeights:
    """The C kernels' form of a model's weights at one weights version (``model.weights_epoch``),
    computed per layer on first use and shared by every plan of that version.  They are carved
    from one _Slab in the order the first plan asks for them, which is the order it runs."""

    def __init__(self, model, so_far=None):
        """``so_far``: what another's ``so_far()`` gave, at the same weights (``model`` is a copy
        of its model): taken as they are, and only what they lack is packed here."""
        self.epoch = model.weights_epoch
        self._arrays = so_far or {}  # conv or dense layer name -> dict of aligned float32 arrays
        # the packed form is about as big as the model's parameters (batch norms folded away,
        # panels padded): one mapping in the usual case, a second one if it is bigger
        self._slab = _Slab(huge_pages(), expect_bytes=4 * model.count_params())

    def so_far(self):
        """{layer name: its packed arrays} packed so far, for a copy of the model to start from
        (model.__copy__ takes them under the model's plan lock: no plan is packing meanwhile).
        The kernels only read them: plans of both models may run on them at once."""
        return dict(self._arrays)

    def _get(self, name, make):
        arrays = self._arrays.get(name)
        if arrays is None:
            arrays = self._arrays[name] = make()
        return arrays

    def depthwise(self, conv, bn):
        """BN folded into a depthwise kernel: w [3, 3, C] and bias [C]."""
        def make():
            wk, bias = fold_batchnorm(conv.weights[0][:, :, :, 0], *bn.weights, eps=bn.epsilon)
            return dict(w=self._slab.copy(wk), bias=self._slab.copy(bias))
        return self._get(conv.name, make)

    def conv(self, conv, bn):
        """BN folded into a stem (as a [27, cout] matrix) or 1x1 kernel, packed with its bias."""
        def make():
            kernel = conv.weights[0]
            k = kernel.reshape(-1, conv.cout) if conv.kernel == 3 else kernel[0, 0]
            wk, bias = fold_batchnorm(k, *bn.weights, eps=bn.epsilon)
            return dict(w=_pack(wk, bias, self._slab))
        return self._get(conv.name, make)

    def dense(self, layer):
        """A dense layer's [cin, cout] kernel (or a biased 1x1 conv's, DeepLabV3's classifier)
        packed with its bias."""
        def make():
            kernel, bias = layer.weights
            return dict(w=_pack(kernel.reshape(-1, kernel.shape[-1]), bias, self._slab))
        return self._get(layer.name, make)

    @property
    def nbytes(self):
        return sum(a.nbytes for arrays in self._arrays.values() for a in arrays.values())


class Unsupported(Exception):
    """The graph has a layer the C kernels do not cover; the NumPy layers run it instead."""


def _first_half(shape):
    """Floats of a tensor of ``shape`` before the point where two threads split it: the first of
    two groups' images (an even batch), or the first half of one image's pixels (csrc/plan.c:
    row and pixel splits both cut there where the rows are even); half the floats otherwise."""
    n, size = shape[0], int(np.prod(shape))
    if n > 1 and n % 2 == 0:
        return n // 2 * (size // n)
    if n == 1 and len(shape) == 4:
        return shape[1] * shape[2] // 2 * shape[3]
    return size // 2


class _Buffer:
    """One arena buffer: ``lo`` floats before its middle and ``hi`` after it.  Each tensor placed
    in it puts the point where two threads split it (_first_half) at the middle (to within a
    cache line: its start stays 64-byte aligned), so the first thread's share of every tensor the
    buffer ever holds lies below the middle and the second's above (with more threads, the middle
    boundary of an even count): a thread writes the lines it wrote itself in the ops before, not
    lines the other thread's cache holds.  Where the two threads run on cores that share no cache
    (a virtual machine's vCPUs on two dies of the host), each line taken over from the other core
    costs some 300 ns: with tensors from the buffer's start, 2 threads took 1.04-1.05x longer on
    a batch of 8 across dies than on one die (1.0_224, 1.4_224), now the same (benchmarks/
    README.md).  Split by output panels (the 7x7 layers, Conv_1, the head), a tensor's shares
    interleave and still share lines."""

    def __init__(self, lo, hi):
        self.lo = -(-lo // (ALIGN // 4)) * (ALIGN // 4)
        self.hi = hi
        self.data = aligned_empty(self.lo + hi)

    def fits(self, size, half):
        return self.lo >= half and self.hi >= size - half

    def view(self, shape, size, half):
        start = (self.lo - half) // (ALIGN // 4) * (ALIGN // 4)
        return self.data[start:start + size].reshape(shape)


class _Buffers:
    """Arena buffers (_Buffer) handed out and taken back by liveness, at plan-build time.

    One take per op.  A buffer given back is not handed out again for QUARANTINE more ops, so an
    op's output never lands on memory that the ops just before it read or wrote: then the threads
    need not meet at a barrier before a pointwise conv that reads only its own rows (see
    _mark_syncs, which checks this rather than trusting it)."""

    QUARANTINE = 3

    def __init__(self):
        self.free = []  # (buffer, op count when given back)
        self.clock = 0
        self.nbytes = 0  # allocated so far

    def take(self, shape):
        self.clock += 1
        size, half = int(np.prod(shape)), _first_half(shape)
        fits = [(b, t) for b, t in self.free if b.fits(size, half) and t + self.QUARANTINE <= self.clock]
        if fits:
            buf = min(fits, key=lambda bt: bt[0].data.size)[0]
            self.free = [(b, t) for b, t in self.free if b is not buf]
        else:
            buf = _Buffer(half, size - half)
            self.nbytes += buf.data.nbytes
        return buf, buf.view(shape, size, half)

    def give(self, buf):
        self.free.append((buf, self.clock))


class Plan:
    """The ops, activation buffers and C schedule of one input shape, over ``packed`` weights."""

    def __init__(self, model, shape, packed):
        self.shape = tuple(shape)
        self.epoch = packed.epoch
        self.keep = []  # arrays the C calls point into
        self.ops = []
        self.labels = []  # the Keras layer each op computes
        self._build(model, packed)

    def __getstate__(self):
        raise TypeError("a compiled C plan cannot be pickled (a model drops its plans when pickled)")

    def _p(self, a):
        ptr = native.as_float_ptr(a)
        self.keep.append((int(native.ffi.cast("uintptr_t", ptr)), a))
        return ptr

    def _build(self, model, packed):
        lib = native.lib
        n, h, w, _ = self.shape
        layers = model.layers
        byname = {layer.name: layer for layer in layers}
        shapes = arch.output_shapes(layers, (h, w, 3))
        consumers = {}
        for layer in layers:
            for i in layer.inputs:
                consumers.setdefault(i, []).append(layer.name)
        # plain allocations, not a _Slab: on huge pages the activations ran no faster (1.0_224 and
        # 0.5_160 on the Zen 5: 0.993-1.003x) and the huge pages that fused-away buffers share
        # with live ones cost 13 MB more RSS
        arena = _Buffers()
        self.input = aligned_empty(int(np.prod(self.shape))).reshape(self.shape)  # replaced per run
        tensors = {layers[0].name: (None, self.input)}  # name -> (arena buffer, view)
        pending = {name: len(c) for name, c in consumers.items()}

        def follow(name, kind):
            nxt = consumers.get(name, [])
            if len(nxt) == 1 and isinstance(byname[nxt[0]], kind):
                return byname[nxt[0]]
            return None

        def release(name):
            pending[name] -= 1
            if pending[name] == 0 and tensors[name][0] is not None:
                arena.give(tensors[name][0])

        done = {layers[0].name}
        for layer in layers[1:]:
            if layer.name in done:
                continue
            src = layer.inputs[0]
            x = tensors[src][1]
            if isinstance(layer, L.Conv2D) and layer.use_bias:  # DeepLabV3's classifier: no BN after it
                if layer.kernel != 1 or layer.stride != 1:
                    raise Unsupported(f"{layer.name!r}: only a 1x1 convolution may have a bias")
                buf, y = arena.take((n,) + shapes[layer.name])
                self._op(lib.MNV2_OP_POINTWISE, x, y, layer=layer.name, w=packed.dense(layer)["w"],
                         c=layer.cin, cout=layer.cout, split_rows=y.shape[1],
                         split_panels=_by_panels(int(np.prod(y.shape[:3])), y.shape[1], layer.cin, layer.cout))
                tensors[layer.name] = (buf, y)
                release(src)
                done.add(layer.name)
            elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.ZeroPadding2D)):
                fused = [layer]
                conv = layer
                pads = None
                if isinstance(layer, L.ZeroPadding2D):
                    pads = layer.pads(*shapes[src][:2])
                    conv = follow(layer.name, L.DepthwiseConv2D)
                    fused.append(conv)
                bn = follow(conv.name, L.BatchNormalization)
                fused.append(bn)
                relu = follow(bn.name, L.ReLU)
                add = follow(bn.name, L.Add) if relu is None else None
                fused += [f for f in (relu, add) if f is not None]
                out_name = fused[-1].name
                out_shape = (n,) + shapes[conv.name]
                buf, y = arena.take(out_shape)
                if isinstance(conv, L.DepthwiseConv2D):
                    dw = packed.depthwise(conv, bn)
                    if pads is None:
                        pads = conv.pads(*shapes[src][:2])
                    dilated = dict(dilation=conv.dilation, cout=x.shape[3]) if conv.dilation > 1 else {}
                    self._op(lib.MNV2_OP_DWCONV_DILATED if dilated else lib.MNV2_OP_DWCONV, x, y, layer=conv.name,
                             w=dw["w"], bias=dw["bias"],
                             relu6=relu is not None, c=x.shape[3], stride=conv.stride,
                             pad_top=pads[0], pad_left=pads[2], split_rows=y.shape[1], **dilated)
                elif conv.kernel == 3:
                    if conv.cin != 3 or conv.stride != 2:
                        raise Unsupported(f"the C stem takes 3 input channels at stride 2, "
                                          f"{conv.name!r} has {conv.cin} at stride {conv.stride}")
                    pads = conv.pads(*shapes[src][:2])
                    self._op(lib.MNV2_OP_STEM, x, y, layer=conv.name, w=packed.conv(conv, bn)["w"],
                             relu6=relu is not None, c=3, cout=conv.cout, stride=2,
                             pad_top=pads[0], pad_left=pads[2], split_rows=y.shape[1])
                else:
                    residual = None
                    if add is not None:
                        residual = tensors[[i for i in add.inputs if i != bn.name][0]][1]
                    plain_relu = relu is not None and relu.max_value is None  # DeepLabV3's head
                    self._op(lib.MNV2_OP_POINTWISE, x, y, layer=conv.name, w=packed.conv(conv, bn)["w"],
                             residual=residual, relu6=relu is not None and not plain_relu, c=conv.cin,
                             cout=conv.cout, split_rows=y.shape[1],
                             split_panels=_by_panels(int(np.prod(y.shape[:3])), y.shape[1], conv.cin, conv.cout))
                    if plain_relu:  # max(y, 0) in place
                        self._op(lib.MNV2_OP_COPY, y, y, layer=relu.name, c=conv.cout, cout=conv.cout,
                                 relu=1, split_rows=y.shape[1])
                tensors[out_name] = (buf, y)
                release(src)
                if add is not None:
                    release([i for i in add.inputs if i != bn.name][0])
                done.update(f.name for f in fused)
            elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
                buf, y = arena.take((n, x.shape[3]))
                kind = lib.MNV2_OP_MAXPOOL if isinstance(layer, L.GlobalMaxPooling2D) else lib.MNV2_OP_AVGPOOL
                # threads share its channels as the pointwise conv before it shares its panels
                self._op(kind, x, y, layer=layer.name, c=x.shape[3], split_panels=1)
                tensors[layer.name] = (buf, y.reshape(n, 1, 1, -1) if layer.keepdims else y)
                release(src)
            elif isinstance(layer, L.ResizeBilinear):
                oh, ow, c = shapes[layer.name]
                buf, y = arena.take((n, oh, ow, c))
                sh, sw = resize_scales(x.shape[1], x.shape[2], oh, ow, layer.align_corners)
                self._op(lib.MNV2_OP_RESIZE, x, y, layer=layer.name, c=c, cout=c, split_rows=oh,
                         align_corners=int(layer.align_corners), scale_h=sh, scale_w=sw)
                tensors[layer.name] = (buf, y)
                for i in layer.inputs:
                    release(i)
            elif isinstance(layer, L.Concatenate):
                buf, y = arena.take((n,) + shapes[layer.name])
                offset = 0
                for i in layer.inputs:
                    part = tensors[i][1]
                    self._op(lib.MNV2_OP_COPY, part, y, layer=layer.name, c=part.shape[3], cout=y.shape[3],
                             y_offset=offset, split_rows=y.shape[1])
                    offset += part.shape[3]
                tensors[layer.name] = (buf, y)
                for i in layer.inputs:
                    release(i)
            elif isinstance(layer, L.AveragePooling2D):  # TF-slim's head
                oh, ow, c = shapes[layer.name]
                buf, y = arena.take((n, oh, ow, c))
                kh, kw = layer.window(x.shape[1], x.shape[2])
                self._op(lib.MNV2_OP_AVGPOOL_WINDOW, x, y, layer=layer.name, c=c, cout=c, split_rows=oh,
                         pool_h=kh, pool_w=kw)
                tensors[layer.name] = (buf, y)
                release(src)
            elif isinstance(layer, L.Dense) and x.ndim == 4 and layer.activation in (None, "softmax"):  # a grid
                buf, y = arena.take((n,) + shapes[layer.name])
                self._op(lib.MNV2_OP_POINTWISE, x, y, layer=layer.name, w=packed.dense(layer)["w"], c=layer.cin,
                         cout=layer.cout, split_rows=y.shape[1],
                         split_panels=_by_panels(int(np.prod(y.shape[:3])), y.shape[1], layer.cin, layer.cout))
                tensors[layer.name] = (buf, y)
                release(src)
                if layer.activation == "softmax":  # each cell's scores (Keras's Dense on a 4-D tensor)
                    self._op(lib.MNV2_OP_SOFTMAX, y, y, layer=layer.name, c=layer.cout)
            elif isinstance(layer, L.Dense) and x.ndim == 2:
                buf, y = arena.take((n, layer.cout))
                self._op(lib.MNV2_OP_POINTWISE, x, y, layer=layer.name, w=packed.dense(layer)["w"],
                         c=layer.cin, cout=layer.cout,
                         n=1, oh=n, ow=1, split_rows=n, batch_rows=1,
                         split_panels=_by_panels(n, n, layer.cin, layer.cout))
                tensors[layer.name] = (buf, y)
                release(src)
                if layer.activation == "softmax":
                    self._op(lib.MNV2_OP_SOFTMAX, y, y, layer=layer.name, c=layer.cout)
            else:
                raise Unsupported(f"the C plan cannot lower layer {layer.name!r} ({type(layer).__name__})")
        self.output = tensors[layers[-1].name][1]
        self.ops, self.labels = _fuse_blocks(self.ops, self.labels)
        # drop the buffers only fused-away ops used (the expanded tensors)
        used = {int(native.ffi.cast("uintptr_t", v)) for op in self.ops for v in op.values()
                if isinstance(v, native.ffi.CData)}
        self.keep = [(addr, a) for addr, a in self.keep if addr in used]
        _mark_pixel_splits(self.ops)
        _mark_syncs(self.ops)
        _mark_panel_pixels(self.ops)
        _mark_prefetch(self.ops)
        start = self.input.__array_interface__["data"][0]
        self._input_ops = [i for i, op in enumerate(self.ops)
                           if int(native.ffi.cast("uintptr_t", op["x"])) == start]
        # The stem checks the image for NaN and inf row by row as it reads it (mnv2_op.nonfinite):
        # no pass of its own over a batch that the run then reads again from memory.  Any other
        # op reading the input, or a fused stem whose block leaves its last rows unread, leaves
        # the check to _load.
        self._nonfinite = native.ffi.new("int *")
        for i in self._input_ops:
            if _checks_its_input(self.ops[i]):
                self.ops[i]["nonfinite"] = self._nonfinite
        self._precheck = any("nonfinite" not in self.ops[i] for i in self._input_ops)
        self.c_ops = native.ffi.new("struct mnv2_op[]", len(self.ops))
        for i, fields in enumerate(self.ops):
            for key, value in fields.items():
                if key not in ("reads", "writes", "layers"):
                    setattr(self.c_ops[i], key, value)
        self.nbytes = arena.nbytes  # the activation buffers (the input is the caller's array)
        handle = native.lib.mnv2_plan_create(self.c_ops, len(self.ops))
        if handle == native.ffi.NULL:
            raise MemoryError(f"no memory for the C plan of input shape {self.shape}")
        self.handle = native.ffi.gc(handle, native.lib.mnv2_plan_destroy)

    def _op(self, kind, x, y, layer, w=None, bias=None, residual=None, relu6=False, **dims):
        """Record one op of Keras layer ``layer``: x [N, H, W, C] (or [N, C]) in, y out, the
        kernels' other arguments."""
        self.labels.append(layer)
        null = native.ffi.NULL
        fields = dict(kind=kind, relu6=int(relu6), x=self._p(x), y=self._p(y), sync=1,
                      reads=[_span(a) for a in (x, residual) if a is not None], writes=_span(y),
                      w=null if w is None else self._p(w), bias=null if bias is None else self._p(bias),
                      residual=null if residual is None else self._p(residual),
                      n=x.shape[0], h=x.shape[1] if x.ndim == 4 else 1, w_=x.shape[2] if x.ndim == 4 else 1,
                      oh=y.shape[1] if y.ndim == 4 else 1, ow=y.shape[2] if y.ndim == 4 else 1)
        fields.update(dims)
        self.ops.append(fields)

    _KINDS = {0: "stem", 1: "depthwise", 2: "pointwise", 3: "avgpool", 4: "maxpool", 5: "softmax",
              6: "block", 7: "depthwise", 8: "resize", 9: "copy", 10: "avgpool"}

    def _check(self, rc):
        if rc != 0:
            raise MemoryError(f"no memory for the C threads' scratch or a profile's timings (input shape {self.shape})")

    def profile(self, x, pool, runs=30):
        """Per op: its layer, kind, shapes, multiply-accumulates and median wall time over ``runs``
        runs on ``pool``.  On more than one thread, each stage's wall time (its ops between two
        meeting points, waits and imbalance included) is shared among its ops by the time all
        threads spent in each, so every op gets its part whichever threads ran it, and a run's ops
        sum to its wall time (csrc/plan.c, mnv2_plan_profile)."""
        self._load(x)
        n_ops = len(self.ops)
        seconds = native.ffi.new("double[]", n_ops)
        times = np.empty((runs, n_ops))
        for r in range(runs):
            self._check(native.lib.mnv2_plan_profile(self.handle, pool.handle, seconds))
            self._checked()
            times[r] = native.ffi.unpack(seconds, n_ops)
        med = np.median(times, axis=0)
        rows = []
        for op, label, t in zip(self.ops, self.labels, med):
            kind = self._KINDS[op["kind"]]
            if kind == "pointwise":
                pixels = op["n"] * op["oh"] * op["ow"]
                macs, what = pixels * op["c"] * op["cout"], f"{pixels}x{op['c']}->{op['cout']}"
            elif kind == "depthwise":
                macs = op["n"] * op["oh"] * op["ow"] * op["c"] * 9
                what = f"{op['h']}x{op['w_']}x{op['c']}/s{op['stride']}"
            elif kind == "block":
                pixels_in, pixels = op["n"] * op["h"] * op["w_"], op["n"] * op["oh"] * op["ow"]
                macs = (pixels_in * op["c"] * op["ce"] if op["w"] != native.ffi.NULL else 0) + \
                    pixels * op["ce"] * (9 + op["cout"])
                dilated = f"d{op['dilation']}" if op["dilation"] > 1 else ""
                what = f"{op['h']}x{op['w_']}x{op['c']}->{op['ce']}/s{op['stride']}{dilated}->{op['cout']}"
                if op.get("stem_w") is not None:  # the fused stem's MACs too
                    macs += pixels_in * 27 * op["c"]
                    what = f"{op['stem_h']}x{op['stem_w_']}x3/s2->{what}"
            elif kind == "stem":
                macs, what = op["n"] * op["oh"] * op["ow"] * 27 * op["cout"], f"{op['h']}x{op['w_']}x3->{op['cout']}"
            else:
                macs, what = 0, ""
            row = dict(layer=label, kind=kind, shape=what, macs=int(macs), seconds=float(t))
            if "layers" in op:  # a fused op: every layer it computes, the label last
                row["fused"] = list(op["layers"])
            rows.append(row)
        return rows

    def _load(self, x):
        """Point the ops that read the network input at a C-contiguous float32 batch of this
        plan's shape (no copy; the caller keeps it alive during the run).  Its check for NaN and
        infinity happens in the run, in the stem (_checked after it), or here where another op
        reads the input."""
        ptr = native.as_float_ptr(x)
        if self._precheck and native.lib.mnv2_count_nonfinite(ptr, x.size):
            raise ArgumentError("input contains NaN or inf")
        self._nonfinite[0] = 0
        for i in self._input_ops:
            self.c_ops[i].x = ptr

    def _checked(self):
        """After a run: raise if the stem found NaN or inf in the input (the output is then
        garbage and never returned)."""
        if self._nonfinite[0]:
            raise ArgumentError("input contains NaN or inf")

    def run(self, x, pool):
        """The output for a C-contiguous float32 batch of this plan's shape, run on ``pool``."""
        self._load(x)
        self._check(native.lib.mnv2_plan_run(self.handle, pool.handle))
        self._checked()
        return self.output.copy()
