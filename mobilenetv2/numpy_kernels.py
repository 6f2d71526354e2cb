"""The NumPy kernels: the reference twin of every C kernel in ``csrc/``.

Every function takes and returns NHWC arrays (``x: [N, H, W, C]``) and computes in the dtype of
its input, so the same code is the float32 engine and the float64 golden reference.  Padding is
given explicitly as ``(top, bottom, left, right)``: the callers decide TF-SAME or Keras
``correct_pad`` (see :mod:`mobilenetv2.arch`).  Optional ``bias``/``relu6``/``residual``
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


def depthwise3x3(x, w, stride, pads, bias=None, relu6=False):
    """y[n,i,j,c] = sum_{a,b} xpad[n, i*s+a, j*s+b, c] * w[a,b,c] (+bias, ReLU6).

    x: [N, H, W, C]; w: [3, 3, C] (a Keras (3, 3, C, 1) depthwise kernel without its last axis).
    """
    xp = zero_pad(x, pads)
    n, hp, wp, c = xp.shape
    ho = (hp - 3) // stride + 1
    wo = (wp - 3) // stride + 1
    w = w.astype(x.dtype, copy=False)
    y = np.zeros((n, ho, wo, c), dtype=x.dtype)
    for a in range(3):
        for b in range(3):
            y += xp[:, a:a + stride * (ho - 1) + 1:stride, b:b + stride * (wo - 1) + 1:stride, :] * w[a, b]
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
