"""Validated Python entry points to the C kernels, one per kernel, each allocating its output.

The C side checks nothing: these wrappers (and the plan) make sure every array is float32,
C-contiguous and of the shapes the kernel reads before calling in.  ``scalar=True`` calls the
portable twin instead of the dispatcher (which picks AVX-512 or AVX2+FMA when the CPU has them);
``scalar='avx2'`` (any name in native.isas()) runs the dispatcher on that instruction set.
"""
import numpy as np

from mobilenetv2.engines import native
from mobilenetv2.errors import ArgumentError, flag, is_finite, is_items, is_whole

MAX_RESIZE = 8192  # output side of resize_bilinear (an image's own bound, preprocessing.MAX_TARGET)


def _f32(a, name, ndim):
    a = np.asarray(a)
    if a.dtype != np.float32:
        raise ArgumentError(f"{name} must be float32, got {a.dtype}")
    if a.ndim != ndim:
        raise ArgumentError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return np.require(a, None, ("C", "A"))  # C-contiguous at a float's alignment, as C loads it


def _as_f32(a, name):
    """A float array of any float dtype as C-contiguous float32, else an ArgumentError (a string or
    an object array must not reach float())."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise ArgumentError(f"{name} must be an array of floats, got dtype {a.dtype}")
    return np.require(a, np.float32, ("C", "A"))


def _int(value, name):
    """A whole number (Python's or NumPy's, not a bool) as an int, else an ArgumentError: the
    kernels' sizes go to C as integers, so 1.5 or "2" must not get as far as cffi."""
    if not is_whole(value):
        raise ArgumentError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _ints(values, name, count):
    """A sequence of ``count`` whole numbers as a tuple of ints, else an ArgumentError."""
    if not is_items(values) or not hasattr(values, "__len__") or len(values) != count:
        raise ArgumentError(f"{name} must be {count} whole numbers, got {values!r}")
    return tuple(_int(v, name) for v in values)


def _flag(value, name):
    """A flag (see errors.flag: a bool, np.array(True), 0 or 1) as 0 or 1 for C, else an ArgumentError."""
    if flag(value) is not None:
        return int(flag(value))
    raise ArgumentError(f"{name} must be True or False, got {value!r}")


def _fn(name, scalar):
    """Kernel ``name``: its portable ``_scalar`` twin where ``scalar`` is True, the dispatcher where
    it is False, and the dispatcher on one instruction set where it names one ('scalar', 'avx2',
    'avx512': see native.isas()), so the tests can run every ISA the CPU has."""
    if not native.available():
        raise RuntimeError("the C extension is not built")
    if isinstance(scalar, str):
        fn = getattr(native.lib, name)

        def on_isa(*args):
            with native.use_isa(scalar):
                return fn(*args)
        return on_isa
    return getattr(native.lib, name + "_scalar" if scalar else name)


_ptr = native.as_float_ptr


def _rows(rows, total):
    """(r0, r1) of a row range inside [0, total]; the kernels write exactly those rows."""
    r0, r1 = (0, total) if rows is None else _ints(rows, "rows", 2)
    if not 0 <= r0 <= r1 <= total:
        raise ArgumentError(f"rows {rows} outside [0, {total}]")
    return r0, r1


def pack_pointwise(w, bias):
    """Pack a [cin, cout] kernel and its [cout] bias into f32_pointwise's layout."""
    w = _f32(w, "w", 2)
    bias = _f32(bias, "bias", 1)
    cin, cout = w.shape
    if bias.shape != (cout,):
        raise ArgumentError(f"bias must have shape ({cout},), got {bias.shape}")
    packed = np.empty(native.lib.f32_pointwise_packed_floats(cin, cout), np.float32)
    native.lib.f32_pointwise_pack(_ptr(w), _ptr(bias), cin, cout, _ptr(packed))
    return packed


def pointwise(x, packed, cin, cout, relu6=False, residual=None, rows=None, panels=None, scalar=False):
    """y = act(x @ w + bias) (+ residual) for x: [M, cin]; ``rows`` = (m0, m1) computes only those
    rows, ``panels`` = (p0, p1) only output channels [16 p0, 16 p1) (the rest of y stays 0)."""
    x = _f32(x, "x", 2)
    packed = _f32(packed, "packed", 1)
    cin, cout, relu6 = _int(cin, "cin"), _int(cout, "cout"), _flag(relu6, "relu6")
    if cin < 1 or cout < 1 or x.shape[1] != cin or packed.size != native.lib.f32_pointwise_packed_floats(cin, cout):
        raise ArgumentError(f"x {x.shape} / packed {packed.shape} do not fit cin={cin}, cout={cout}")
    m = x.shape[0]
    y = np.zeros((m, cout), np.float32)
    res = native.ffi.NULL
    if residual is not None:
        residual = _f32(residual, "residual", 2)
        if residual.shape != (m, cout):
            raise ArgumentError(f"residual must have shape {(m, cout)}, got {residual.shape}")
        res = _ptr(residual)
    m0, m1 = _rows(rows, m)
    if panels is None:
        _fn("f32_pointwise", scalar)(_ptr(x), _ptr(packed), res, _ptr(y), cin, cout, m0, m1, relu6)
    else:
        p0, p1 = _rows(panels, native.lib.f32_pointwise_panels(cout))
        _fn("f32_pointwise_part", scalar)(_ptr(x), _ptr(packed), res, _ptr(y), cin, cout, m0, m1,
                                          p0, p1, relu6)
    return y


def _conv_out(size, pad_before, pad_after, stride):
    out = (size + pad_before + pad_after - 3) // stride + 1
    if out < 1:
        raise ArgumentError(f"input of size {size} with pads ({pad_before}, {pad_after}) is too small for a 3x3 window")
    return out


def dwconv3x3(x, w, bias, stride, pads, relu6=False, rows=None, scalar=False):
    """Depthwise 3x3 on x: [N, H, W, C] with w: [3, 3, C], bias: [C], pads (top, bottom, left, right)."""
    x, w, bias = _f32(x, "x", 4), _f32(w, "w", 3), _f32(bias, "bias", 1)
    stride, pads, relu6 = _int(stride, "stride"), _ints(pads, "pads", 4), _flag(relu6, "relu6")
    n, h, wd, c = x.shape
    if w.shape != (3, 3, c) or bias.shape != (c,) or stride not in (1, 2):
        raise ArgumentError(f"w {w.shape}, bias {bias.shape}, stride {stride} do not fit x {x.shape}")
    top, bottom, left, right = pads
    if max(pads) > 2 or min(pads) < 0:
        raise ArgumentError(f"pads must be in [0, 2], got {pads}")
    oh, ow = _conv_out(h, top, bottom, stride), _conv_out(wd, left, right, stride)
    y = np.zeros((n, oh, ow, c), np.float32)
    r0, r1 = _rows(rows, oh)
    _fn("f32_dwconv3x3", scalar)(_ptr(x), _ptr(w), _ptr(bias), _ptr(y), n, h, wd, c, stride,
                                 top, left, oh, ow, r0, r1, relu6)
    return y


def _stem_args(x, w, bias, pads):
    """The stem's checked arrays and sizes for x: [N, H, W, 3]: (x, packed weights, h, wd, cout,
    pad top, pad left, oh, ow)."""
    x, w, bias = _f32(x, "x", 4), _f32(w, "w", 4), _f32(bias, "bias", 1)
    _, h, wd, c = x.shape
    cout = w.shape[3]
    if c != 3 or w.shape[:3] != (3, 3, 3) or bias.shape != (cout,):
        raise ArgumentError(f"w {w.shape}, bias {bias.shape} do not fit x {x.shape}")
    pads = _ints(pads, "pads", 4)
    top, bottom, left, right = pads
    if max(pads) > 2 or min(pads) < 0:
        raise ArgumentError(f"pads must be in [0, 2], got {pads}")
    oh, ow = _conv_out(h, top, bottom, 2), _conv_out(wd, left, right, 2)
    return x, pack_pointwise(w.reshape(27, cout), bias), h, wd, cout, top, left, oh, ow


def stem(x, w, bias, pads, relu6=False, rows=None, scalar=False):
    """3x3 stride-2 conv of x: [N, H, W, 3] with w: [3, 3, 3, cout], bias: [cout]."""
    x, packed, h, wd, cout, top, left, oh, ow = _stem_args(x, w, bias, pads)
    y = np.zeros((x.shape[0], oh, ow, cout), np.float32)
    r0, r1 = _rows(rows, oh)
    _fn("f32_stem3x3s2", scalar)(_ptr(x), _ptr(packed), _ptr(y), x.shape[0], h, wd, cout,
                                 top, left, oh, ow, r0, r1, _flag(relu6, "relu6"))
    return y


def stem_row(x, w, bias, pads, i, relu6=False, out=None, scalar=False):
    """Output row ``i`` of ``stem`` for one image x: [H, W, 3]: [OW, cout], written into ``out``
    (a C-contiguous float32 [OW, cout] array: the fused block's ring slot in the plan) if given."""
    x, packed, h, wd, cout, top, left, oh, ow = _stem_args(_f32(x, "x", 3)[None], w, bias, pads)
    i = _int(i, "i")
    if not 0 <= i < oh:
        raise ArgumentError(f"row {i} outside [0, {oh})")
    if out is None:
        out = np.zeros((ow, cout), np.float32)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (ow, cout)
              and out.flags.c_contiguous and out.flags.aligned and out.flags.writeable):
        raise ArgumentError(f"out must be a writeable, aligned, C-contiguous float32 array of shape {(ow, cout)}")
    _fn("f32_stem3x3s2_row", scalar)(_ptr(x), _ptr(packed), _ptr(out), h, wd, cout, top, left, ow,
                                     i, _flag(relu6, "relu6"))
    return out


def global_pool(x, kind="avg", scalar=False, channels=None):
    """[N, H, W, C] -> [N, C], mean or max over H and W; channels=(k0, k1): only those (the
    rest of y zero), as a thread sharing the channels computes them."""
    x = _f32(x, "x", 4)
    n, h, w, c = x.shape
    if not isinstance(kind, str) or kind not in ("avg", "max"):
        raise ArgumentError(f"kind must be 'avg' or 'max', got {kind!r}")
    if h * w == 0:
        raise ArgumentError(f"x {x.shape} has no pixels to pool")
    if scalar is True:
        scalar = "scalar"  # the pools' twins are reached through the dispatcher
    if channels is None:
        y = np.empty((n, c), np.float32)
        _fn({"avg": "f32_global_avgpool", "max": "f32_global_maxpool"}[kind], scalar)(_ptr(x), _ptr(y), n, h * w, c)
        return y
    k0, k1 = _ints(channels, "channels", 2)
    if not 0 <= k0 <= k1 <= c:
        raise ArgumentError(f"channels {channels} are not a range within the {c} channels")
    y = np.zeros((n, c), np.float32)
    _fn({"avg": "f32_global_avgpool_part", "max": "f32_global_maxpool_part"}[kind], scalar)(
        _ptr(x), _ptr(y), n, h * w, c, k0, k1)
    return y


def softmax(x, scalar=False):
    """[N, C] -> [N, C], softmax over C shifted by the row maximum."""
    x = _f32(x, "x", 2)
    if x.shape[1] == 0:
        raise ArgumentError(f"x {x.shape} has no classes")
    if not np.isfinite(x).all():
        raise ArgumentError("x contains NaN or inf")
    y = np.empty_like(x)
    _fn("f32_softmax", scalar)(_ptr(x), _ptr(y), x.shape[0], x.shape[1])
    return y


def fold_batchnorm(w, gamma, beta, mean, var, eps, scalar=False):
    """(w * inv, beta - mean * inv), inv = gamma / sqrt(var + eps), for w whose last axis is the
    output channel; the C twin of numpy_kernels.fold_batchnorm for float32 arrays."""
    w = _as_f32(w, "w")
    if w.ndim < 1:
        raise ArgumentError("w must have an output-channel axis")
    c = w.shape[-1]
    stats = [_f32(_as_f32(a, name), name, 1)
             for a, name in ((gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var"))]
    if not is_finite(eps) or eps < 0:
        raise ArgumentError(f"eps must be a finite number from 0 up, got {eps!r}")
    if any(s.shape != (c,) for s in stats):
        raise ArgumentError(f"batch-norm statistics must have shape ({c},), got {[s.shape for s in stats]}")
    if not all(np.isfinite(a).all() for a in [w] + stats) or (stats[3] + eps <= 0).any():
        raise ArgumentError("batch-norm folding needs finite weights and var + eps > 0")
    w_out, bias = np.empty_like(w), np.empty(c, np.float32)
    _fn("f32_fold_batchnorm", scalar)(_ptr(w), w.size // max(c, 1), c, *[_ptr(s) for s in stats],
                                      float(eps), _ptr(w_out), _ptr(bias))
    return w_out, bias


def dwconv3x3_dilated(x, w, bias, stride, dilation, pads, relu6=False, rows=None, scalar=False):
    """Dilated depthwise 3x3 on x: [N, H, W, C] (taps ``dilation`` apart), w: [3, 3, C], bias: [C],
    pads (top, bottom, left, right), each at most ``2 * dilation``."""
    x, w, bias = _f32(x, "x", 4), _f32(w, "w", 3), _f32(bias, "bias", 1)
    stride, dilation, relu6 = _int(stride, "stride"), _int(dilation, "dilation"), _flag(relu6, "relu6")
    pads = _ints(pads, "pads", 4)
    n, h, wd, c = x.shape
    if w.shape != (3, 3, c) or bias.shape != (c,) or stride not in (1, 2) or not 1 <= dilation <= 64:
        raise ArgumentError(f"w {w.shape}, bias {bias.shape}, stride {stride}, dilation {dilation} "
                            f"do not fit x {x.shape}")
    if max(pads) > 2 * dilation or min(pads) < 0:
        raise ArgumentError(f"pads must be in [0, {2 * dilation}], got {pads}")
    top, bottom, left, right = pads
    span = 2 * dilation + 1
    oh, ow = (h + top + bottom - span) // stride + 1, (wd + left + right - span) // stride + 1
    if oh < 1 or ow < 1:
        raise ArgumentError(f"input {x.shape} with pads {pads} is too small for a dilated 3x3 window")
    y = np.zeros((n, oh, ow, c), np.float32)
    r0, r1 = _rows(rows, oh)
    _fn("f32_dwconv3x3_dilated", scalar)(_ptr(x), _ptr(w), _ptr(bias), _ptr(y), n, h, wd, c, stride,
                                         dilation, top, left, oh, ow, r0, r1, relu6)
    return y


def resize_scales(h, w, oh, ow, align_corners):
    """The float32 scales f32_resize_bilinear takes (PyTorch's, rounded as numpy_kernels does)."""
    h, w, oh, ow = _ints((h, w, oh, ow), "sizes", 4)
    align_corners = _flag(align_corners, "align_corners")
    if min(h, w, oh, ow) < 1:
        raise ArgumentError(f"sizes must be from 1 up, got {(h, w, oh, ow)}")

    def one(i, o):
        if align_corners:
            return np.float32((i - 1) / (o - 1)) if o > 1 else np.float32(0)
        return np.float32(i) / np.float32(o)
    return float(one(h, oh)), float(one(w, ow))


def resize_bilinear(x, oh, ow, align_corners=False, rows=None):
    """Bilinear resize of x: [N, H, W, C] to [N, oh, ow, C] (PyTorch's arithmetic)."""
    x = _f32(x, "x", 4)
    oh, ow, align_corners = _int(oh, "oh"), _int(ow, "ow"), _flag(align_corners, "align_corners")
    n, h, w, c = x.shape
    if not (1 <= oh <= MAX_RESIZE and 1 <= ow <= MAX_RESIZE) or h < 1 or w < 1:
        raise ArgumentError(f"cannot resize {x.shape} to {oh}x{ow} (sides from 1 to {MAX_RESIZE})")
    y = np.zeros((n, oh, ow, c), np.float32)
    r0, r1 = _rows(rows, oh)
    sh, sw = resize_scales(h, w, oh, ow, align_corners)
    native.lib.f32_resize_bilinear(_ptr(x), _ptr(y), n, h, w, c, oh, ow, align_corners, sh, sw, r0, r1)
    return y


def relu6(x, scalar=False):
    """min(max(x, 0), 6) of a float32 array, any shape."""
    x = np.ascontiguousarray(_f32(x, "x", np.ndim(x)))
    y = np.empty_like(x)
    _fn("f32_relu6", scalar)(_ptr(x), _ptr(y), x.size)
    return y


def count_nonfinite(x, scalar=False):
    """How many of the values of a float32 array are NaN or infinite (the plan's input check)."""
    x = np.ascontiguousarray(_f32(x, "x", np.ndim(x)))
    if scalar is True:
        scalar = "scalar"
    return int(_fn("mnv2_count_nonfinite", scalar)(_ptr(x), x.size))
