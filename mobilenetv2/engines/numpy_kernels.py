"""The NumPy kernels: the reference twin of every C kernel in ``csrc/``.

Every function takes and returns NHWC arrays (``x: [N, H, W, C]``) and computes in the dtype of
its input, so the same code is the float32 engine and the float64 golden reference.  Padding is
given explicitly as ``(top, bottom, left, right)``: the callers decide TF-SAME or Keras
``correct_pad`` (see :mod:`mobilenetv2.network.arch`).  Optional ``bias``/``relu6``/``residual``
arguments describe the fused forms the C kernels implement; the layer-by-layer engine calls the
kernels unfused, exactly as Keras computes them.
"""
import numpy as np

RELU6_MAX = 6.0
BN_EPSILON = 1e-3


def _epilogue(y, bias, relu6, residual=None):
    if bias is not None:
        y += bias
    if relu6:
        np.clip(y, 0.0, RELU6_MAX, out=y)
    if residual is not None:
        y += residual
    return y


def relu6(x):
    """min(max(x, 0), 6), elementwise."""
    return np.clip(x, 0.0, RELU6_MAX).astype(x.dtype, copy=False)


def zero_pad(x, pads):
    """Zero padding of H and W: pads = (top, bottom, left, right)."""
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def conv_output_size(size, kernel, stride, pad_before, pad_after):
    return (size + pad_before + pad_after - kernel) // stride + 1


def conv2d(x, w, stride, pads, bias=None, relu6=False):
    """y[n,i,j,o] = sum_{a,b,c} xpad[n, i*s+a, j*s+b, c] * w[a,b,c,o] (+bias, ReLU6).

    x: [N, H, W, Cin]; w: [KH, KW, Cin, Cout]; pads: (top, bottom, left, right).
    Computed as a sum over the KH*KW kernel taps of [N*Ho*Wo, Cin] @ [Cin, Cout] products.
    """
    kh, kw, cin, cout = w.shape
    xp = zero_pad(x, pads)
    n, hp, wp, _ = xp.shape
    ho = (hp - kh) // stride + 1
    wo = (wp - kw) // stride + 1
    # im2col: the patch matrix [N*Ho*Wo, KH*KW*Cin] in the kernel's (a, b, c) order.
    cols = np.empty((n, ho, wo, kh, kw, cin), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            cols[:, :, :, a, b, :] = xp[:, a:a + stride * (ho - 1) + 1:stride,
                                        b:b + stride * (wo - 1) + 1:stride, :]
    y = cols.reshape(n * ho * wo, kh * kw * cin) @ w.reshape(kh * kw * cin, cout).astype(x.dtype)
    return _epilogue(y.reshape(n, ho, wo, cout), bias, relu6)


def pointwise(x, w, bias=None, relu6=False, residual=None):
    """1x1 convolution: y[n,i,j,o] = sum_c x[n,i,j,c] * w[c,o] (+bias, ReLU6, +residual).

    x: [N, H, W, Cin]; w: [Cin, Cout] (a Keras (1, 1, Cin, Cout) kernel reshaped).
    """
    n, h, wd, cin = x.shape
    y = x.reshape(n * h * wd, cin) @ w.astype(x.dtype, copy=False)
    return _epilogue(y.reshape(n, h, wd, w.shape[1]), bias, relu6, residual)


def depthwise3x3(x, w, stride, pads, bias=None, relu6=False, dilation=1):
    """y[n,i,j,c] = sum_{a,b} xpad[n, i*s+a*d, j*s+b*d, c] * w[a,b,c] (+bias, ReLU6), d = dilation.

    x: [N, H, W, C]; w: [3, 3, C] (a Keras (3, 3, C, 1) depthwise kernel without its last axis).
    """
    xp = zero_pad(x, pads)
    n, hp, wp, c = xp.shape
    d = dilation
    ho = (hp - 2 * d - 1) // stride + 1
    wo = (wp - 2 * d - 1) // stride + 1
    w = w.astype(x.dtype, copy=False)
    y = np.zeros((n, ho, wo, c), dtype=x.dtype)
    for a in range(3):
        for b in range(3):
            y += xp[:, a * d:a * d + stride * (ho - 1) + 1:stride,
                    b * d:b * d + stride * (wo - 1) + 1:stride, :] * w[a, b]
    return _epilogue(y, bias, relu6)


def batchnorm(x, gamma, beta, mean, var, eps=BN_EPSILON):
    """Inference batch norm as TensorFlow computes it: x * inv + (beta - mean * inv),
    inv = gamma / sqrt(var + eps), per channel (last axis)."""
    dt = x.dtype
    inv = (1.0 / np.sqrt(var.astype(dt) + dt.type(eps))) * gamma.astype(dt)
    return x * inv + (beta.astype(dt) - mean.astype(dt) * inv)


def fold_batchnorm(w, gamma, beta, mean, var, eps=BN_EPSILON):
    """Fold an inference batch norm that follows a convolution into the convolution.

    w: kernel whose last axis is the output channel; returns (w * inv, beta - mean * inv).
    Folding is done in float64 and rounded once, so the folded float32 weights are as close
    to the unfolded math as float32 allows.
    """
    inv = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return ((w.astype(np.float64) * inv).astype(w.dtype),
            (beta.astype(np.float64) - mean.astype(np.float64) * inv).astype(w.dtype))


def relu(x):
    """max(x, 0), elementwise."""
    return np.maximum(x, 0).astype(x.dtype, copy=False)


def avg_pool(x, kh, kw):
    """Average over every kh x kw window, stride 1, no padding: [N, H, W, C] -> [N, H-kh+1, W-kw+1, C]
    (the window sum in (a, b) order, then divided by kh * kw)."""
    n, h, w, c = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    y = np.zeros((n, ho, wo, c), dtype=x.dtype)
    for a in range(kh):
        for b in range(kw):
            y += x[:, a:a + ho, b:b + wo, :]
    return y / x.dtype.type(kh * kw)


def _linear_taps(size_in, size_out, align_corners, dt):
    """PyTorch's source indices and weights along one axis of a bilinear resize: (i0, i1, l0, l1),
    computed in the tensor's dtype as ATen's CPU kernel does."""
    if align_corners:
        scale = dt.type((size_in - 1) / (size_out - 1)) if size_out > 1 else dt.type(0)
        src = scale * np.arange(size_out, dtype=dt)
    else:
        scale = dt.type(dt.type(size_in) / dt.type(size_out))
        src = np.maximum(scale * (np.arange(size_out, dtype=dt) + dt.type(0.5)) - dt.type(0.5), dt.type(0))
    i0 = np.minimum(src.astype(np.int64), size_in - 1)
    i1 = np.minimum(i0 + 1, size_in - 1)
    l1 = (src - i0.astype(dt)).astype(dt)
    l0 = (dt.type(1) - l1).astype(dt)
    return i0, i1, l0, l1


def resize_bilinear(x, out_h, out_w, align_corners=False):
    """Bilinear resize of x: [N, H, W, C] to [N, out_h, out_w, C] as torch.nn.functional.interpolate
    (mode='bilinear', antialias=False): y = l0h (l0w x00 + l1w x01) + l1h (l0w x10 + l1w x11)."""
    dt = x.dtype
    h0, h1, lh0, lh1 = _linear_taps(x.shape[1], out_h, align_corners, dt)
    w0, w1, lw0, lw1 = _linear_taps(x.shape[2], out_w, align_corners, dt)
    lw0, lw1 = lw0[None, None, :, None], lw1[None, None, :, None]
    top = x[:, h0][:, :, w0] * lw0 + x[:, h0][:, :, w1] * lw1
    bottom = x[:, h1][:, :, w0] * lw0 + x[:, h1][:, :, w1] * lw1
    return (lh0[None, :, None, None] * top + lh1[None, :, None, None] * bottom).astype(dt, copy=False)


def add(a, b):
    return a + b


def global_avg_pool(x):
    """[N, H, W, C] -> [N, C]: mean over H and W."""
    return x.mean(axis=(1, 2), dtype=x.dtype)


def global_max_pool(x):
    """[N, H, W, C] -> [N, C]: max over H and W."""
    return x.max(axis=(1, 2))


def dense(x, w, bias=None):
    """[N, Cin] @ [Cin, Cout] (+ bias)."""
    y = x @ w.astype(x.dtype, copy=False)
    if bias is not None:
        y += bias.astype(x.dtype, copy=False)
    return y


def softmax(x):
    """Softmax over the last axis, shifted by the row maximum as Keras does."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e
