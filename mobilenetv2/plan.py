"""Lower a float32 model to a plan of fused C kernel calls for one input shape.

Built once per input shape: batch norms folded into the convolutions before them, pointwise
weights packed, ZeroPadding + depthwise + BN + ReLU6 fused into one call, the residual add fused
into the projecting pointwise conv, every activation buffer allocated once and reused as soon
as no later op reads it.  Running the plan allocates nothing but the returned output.
"""
import numpy as np

from mobilenetv2 import arch
from mobilenetv2 import layers as L
from mobilenetv2 import native
from mobilenetv2.numpy_kernels import fold_batchnorm, softmax


ALIGN = 64  # bytes: a cache line, so no 32-byte vector load of a buffer straddles two lines


def aligned_empty(size):
    """A flat float32 array of ``size`` elements whose data starts on an ALIGN-byte boundary."""
    raw = np.empty(size * 4 + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + size * 4].view(np.float32)


def aligned_copy(a):
    """A C-contiguous float32 copy of ``a`` on an ALIGN-byte boundary."""
    out = aligned_empty(a.size).reshape(a.shape)
    out[...] = a
    return out


def _by_panels(rows, cout):
    """Whether threads should share a pointwise layer's output channels rather than its rows:
    when its weights (cin x cout) outweigh its input (rows x cin), so each thread streams only
    its share of the weights (the 7x7 layers, the dense head)."""
    return int(cout > rows)


class Unsupported(Exception):
    """The graph has a layer the C kernels do not cover; the NumPy layers run it instead."""


class _Buffers:
    """Flat float32 arrays handed out and taken back by liveness, at plan-build time."""

    def __init__(self):
        self.free = []

    def take(self, shape):
        size = int(np.prod(shape))
        fits = [b for b in self.free if b.size >= size]
        if fits:
            buf = min(fits, key=lambda b: b.size)
            self.free = [b for b in self.free if b is not buf]
        else:
            buf = aligned_empty(size)
        return buf, buf[:size].reshape(shape)

    def give(self, buf):
        self.free.append(buf)


class Plan:
    def __init__(self, model, shape):
        self.shape = tuple(shape)
        self.sources = [layer.weights for layer in model.layers]
        self.keep = []  # arrays the C calls point into
        self.ops = []
        self.softmax = False
        self._build(model)

    def valid_for(self, model):
        return all(layer.weights is src for layer, src in zip(model.layers, self.sources))

    def _p(self, a):
        self.keep.append(a)
        return native.ffi.cast("float *", native.ffi.from_buffer(a))

    def _build(self, model):
        lib = native.lib
        n, h, w, _ = self.shape
        layers = model.layers
        byname = {layer.name: layer for layer in layers}
        shapes = arch.output_shapes(layers, (h, w, 3))
        consumers = {}
        for layer in layers:
            for i in layer.inputs:
                consumers.setdefault(i, []).append(layer.name)
        pool = _Buffers()
        self.input = aligned_empty(int(np.prod(self.shape))).reshape(self.shape)
        tensors = {layers[0].name: (None, self.input)}  # name -> (pool buffer, view)
        pending = {name: len(c) for name, c in consumers.items()}

        def follow(name, kind):
            nxt = consumers.get(name, [])
            if len(nxt) == 1 and isinstance(byname[nxt[0]], kind):
                return byname[nxt[0]]
            return None

        def release(name):
            pending[name] -= 1
            if pending[name] == 0 and tensors[name][0] is not None:
                pool.give(tensors[name][0])

        done = {layers[0].name}
        for layer in layers[1:]:
            if layer.name in done:
                continue
            src = layer.inputs[0]
            x = tensors[src][1]
            if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.ZeroPadding2D)):
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
                buf, y = pool.take(out_shape)
                kernel = conv.weights[0]
                if isinstance(conv, L.DepthwiseConv2D):
                    wk, bias = fold_batchnorm(kernel[:, :, :, 0], *bn.weights, eps=bn.epsilon)
                    if pads is None:
                        pads = conv.pads(*shapes[src][:2])
                    self._op(lib.MNV2_OP_DWCONV, x, y, w=aligned_copy(wk), bias=aligned_copy(bias),
                             relu6=relu is not None, c=x.shape[3], stride=conv.stride,
                             pad_top=pads[0], pad_left=pads[2], split_rows=y.shape[1])
                elif conv.kernel == 3:
                    if conv.cin != 3 or conv.stride != 2:
                        raise Unsupported(f"the C stem takes 3 input channels at stride 2, "
                                          f"{conv.name!r} has {conv.cin} at stride {conv.stride}")
                    wk, bias = fold_batchnorm(kernel, *bn.weights, eps=bn.epsilon)
                    pads = conv.pads(*shapes[src][:2])
                    self._op(lib.MNV2_OP_STEM, x, y, w=aligned_copy(wk), bias=aligned_copy(bias),
                             relu6=relu is not None, c=3, cout=conv.cout, stride=2,
                             pad_top=pads[0], pad_left=pads[2], split_rows=y.shape[1])
                else:
                    wk, bias = fold_batchnorm(kernel[0, 0], *bn.weights, eps=bn.epsilon)
                    packed = aligned_empty(lib.f32_pointwise_packed_floats(conv.cin, conv.cout))
                    lib.f32_pointwise_pack(self._p(np.ascontiguousarray(wk)), self._p(bias),
                                           conv.cin, conv.cout, self._p(packed))
                    residual = None
                    if add is not None:
                        residual = tensors[[i for i in add.inputs if i != bn.name][0]][1]
                    rows = int(np.prod(y.shape[:3]))
                    self._op(lib.MNV2_OP_POINTWISE, x, y, w=packed, residual=residual,
                             relu6=relu is not None, c=conv.cin, cout=conv.cout,
                             split_rows=rows, split_panels=_by_panels(rows, conv.cout))
                tensors[out_name] = (buf, y)
                release(src)
                if add is not None:
                    release([i for i in add.inputs if i != bn.name][0])
                done.update(f.name for f in fused)
            elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
                buf, y = pool.take((n, x.shape[3]))
                kind = lib.MNV2_OP_MAXPOOL if isinstance(layer, L.GlobalMaxPooling2D) else lib.MNV2_OP_AVGPOOL
                self._op(kind, x, y, c=x.shape[3])
                tensors[layer.name] = (buf, y)
                release(src)
            elif isinstance(layer, L.Dense):
                kernel, bias = layer.weights
                packed = aligned_empty(lib.f32_pointwise_packed_floats(layer.cin, layer.cout))
                lib.f32_pointwise_pack(self._p(kernel), self._p(bias), layer.cin, layer.cout, self._p(packed))
                buf, y = pool.take((n, layer.cout))
                self._op(lib.MNV2_OP_POINTWISE, x, y, w=packed, c=layer.cin, cout=layer.cout,
                         split_rows=n, split_panels=_by_panels(n, layer.cout))
                self.softmax = layer.activation == "softmax"
                tensors[layer.name] = (buf, y)
                release(src)
            else:
                raise Unsupported(f"the C plan cannot lower layer {layer.name!r} ({type(layer).__name__})")
        self.output = tensors[layers[-1].name][1]
        self.c_ops = native.ffi.new("struct mnv2_op[]", len(self.ops))
        for i, fields in enumerate(self.ops):
            for key, value in fields.items():
                setattr(self.c_ops[i], key, value)
        self.threads = None

    def _op(self, kind, x, y, w=None, bias=None, residual=None, relu6=False, **dims):
        """Record one op: x [N, H, W, C] (or [N, C]) in, y out, the kernels' other arguments."""
        null = native.ffi.NULL
        fields = dict(kind=kind, relu6=int(relu6), x=self._p(x), y=self._p(y),
                      w=null if w is None else self._p(w), bias=null if bias is None else self._p(bias),
                      residual=null if residual is None else self._p(residual),
                      n=x.shape[0], h=x.shape[1] if x.ndim == 4 else 1, w_=x.shape[2] if x.ndim == 4 else 1,
                      oh=y.shape[1] if y.ndim == 4 else 1, ow=y.shape[2] if y.ndim == 4 else 1)
        fields.update(dims)
        self.ops.append(fields)

    def set_threads(self, threads):
        """(Re)start the C plan's thread pool with ``threads`` threads."""
        if threads != self.threads:
            handle = native.lib.mnv2_plan_create(self.c_ops, len(self.ops), threads)
            if handle == native.ffi.NULL:
                raise RuntimeError(f"could not start {threads} threads for the C plan")
            self.handle = native.ffi.gc(handle, native.lib.mnv2_plan_destroy)
            self.threads = threads

    def run(self, x, threads=1):
        self.set_threads(threads)
        np.copyto(self.input, x)
        native.lib.mnv2_plan_run(self.handle)
        out = self.output.copy()
        return softmax(out) if self.softmax else out
