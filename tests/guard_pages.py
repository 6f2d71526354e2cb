"""Inputs that end (or start) exactly at an inaccessible page: a C kernel that reads one float past
its input (or before it) stops with SIGSEGV instead of reading a neighbour's bytes unseen, in a
normal (unsanitized) build.  Run as a script (tests/test_c_grids.py does, in a child process, so a
fault fails one test instead of killing the test run): every kernel that reads an array the caller
gives, on every ISA this CPU has and the _scalar twin, on the shapes where a block of pixels or
channels reaches the last (first) float of its input."""
import ctypes
import mmap
import sys

import numpy as np

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_keep = []  # the mappings stay alive (and guarded) until the process ends


def guarded(values, at_end=True):
    """A float32 copy of ``values`` with a PROT_NONE page right after its last byte (at_end) or
    right before its first."""
    values = np.ascontiguousarray(values, np.float32)
    page = mmap.PAGESIZE
    body = max(page, -(-values.nbytes // page) * page)
    buf = mmap.mmap(-1, body + 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    for addr in (base, base + page + body):
        if _libc.mprotect(addr, page, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    offset = page + body - values.nbytes if at_end else page
    out = np.frombuffer(buf, np.float32, count=values.size, offset=offset).reshape(values.shape)
    out[...] = values
    _keep.append(buf)
    return out


def main():
    from mobilenetv2.engines import native, c_kernels as C
    from mobilenetv2.network.layers import same_pads

    rng = np.random.default_rng(0)
    isas = [True] + native.isas()
    for at_end in (True, False):
        g = lambda a: guarded(a, at_end)  # noqa: E731
        for c in (1, 7, 8, 9, 16, 17, 24, 33):
            k, b = rng.standard_normal((3, 3, c)).astype(np.float32), rng.standard_normal(c).astype(np.float32)
            for w in (1, 2, 3, 5, 8, 9, 16, 17, 19, 33):
                for stride in (1, 2):
                    h = 3 + w % 2
                    x = g(rng.standard_normal((1, h, w, c)))
                    for pads in ((0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 0, 1), (1, 0, 1, 0)):
                        if h + pads[0] + pads[1] < 3 or w + pads[2] + pads[3] < 3:
                            continue
                        for isa in isas:
                            C.dwconv3x3(x, k, b, stride, pads, True, scalar=isa)
                            C.dwconv3x3_dilated(x, k, b, stride, 2, (2, 2, 2, 2), True, scalar=isa)
            for m in (1, 5, 7, 13, 25):
                for cin in (1, 9, 33, 400):
                    x = g(rng.standard_normal((m, cin)))
                    w_ = rng.standard_normal((cin, c)).astype(np.float32)
                    packed = g(C.pack_pointwise(w_, b))
                    r = g(rng.standard_normal((m, c)))
                    for isa in isas:
                        C.pointwise(x, packed, cin, c, True, r, scalar=isa)
            xs = g(rng.standard_normal((1, 9, 11, 3)))
            ks = rng.standard_normal((3, 3, 3, c)).astype(np.float32)
            xp = g(rng.standard_normal((2, 3, 5, c)))
            logits = g(rng.standard_normal((2, c)))
            # no padding: the last window of the last row ends at x's last float
            xv = g(rng.standard_normal((1, 9, 11, 3)))
            xw = g(rng.standard_normal((1, 3, 101, 3)))  # 50 pixels: one full 48-pixel gather and a tail
            for isa in isas:
                C.stem(xs, ks, b, same_pads(9, 3, 2) + same_pads(11, 3, 2), relu6=True, scalar=isa)
                C.stem(xv, ks, b, (0, 0, 0, 0), relu6=True, scalar=isa)
                C.stem(xw, ks, b, (0, 0, 0, 0), relu6=True, scalar=isa)
                for i in range(5):  # one row into a buffer of exactly that row (a fused block's ring slot)
                    C.stem_row(xs[0], ks, b, same_pads(9, 3, 2) + same_pads(11, 3, 2), i, True,
                               out=g(np.zeros((6, c))), scalar=isa)
                    C.stem_row(xv[0], ks, b, (0, 0, 0, 0), i % 4, True, out=g(np.zeros((5, c))), scalar=isa)
                C.global_pool(xp, "avg", scalar=isa)
                C.global_pool(xp, "max", scalar=isa)
                C.softmax(logits, scalar=isa)
                C.relu6(g(rng.standard_normal(c)), scalar=isa)
                C.count_nonfinite(g(rng.standard_normal(c)), scalar=isa)
    print("guarded grid: no read outside an input")
    return 0


if __name__ == "__main__":
    sys.exit(main())
