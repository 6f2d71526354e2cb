"""Each layer against a naive loop implementation, on small random shapes (hypothesis).

The naive versions are written from the layers' definitions (Keras's docs and TF-SAME), one
output element at a time in float64, sharing no code with the engine.
"""
import numpy as np
from hypothesis import given, settings, strategies as st

from mobilenetv2.network import layers as L


def naive_same_pads(size, k, s):
    out = (size + s - 1) // s
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def naive_conv(x, w, stride, pads, depthwise=False):
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    top, bottom, left, right = pads
    ho = (h + top + bottom - kh) // stride + 1
    wo = (wd + left + right - kw) // stride + 1
    cout = c if depthwise else w.shape[3]
    y = np.zeros((n, ho, wo, cout))
    for b in range(n):
        for i in range(ho):
            for j in range(wo):
                for a in range(kh):
                    for e in range(kw):
                        r, q = i * stride + a - top, j * stride + e - left
                        if 0 <= r < h and 0 <= q < wd:
                            if depthwise:
                                y[b, i, j] += x[b, r, q] * w[a, e, :, 0]
                            else:
                                y[b, i, j] += x[b, r, q] @ w[a, e]
    return y


def arrays(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


dims = st.integers(1, 9)
chans = st.integers(1, 11)
seeds = st.integers(0, 2 ** 32 - 1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2), h=dims, w=dims, cin=chans, cout=chans, k=st.sampled_from([1, 3]),
       stride=st.sampled_from([1, 2]), padding=st.sampled_from(["same", "valid"]), seed=seeds)
def test_conv2d(n, h, w, cin, cout, k, stride, padding, seed):
    if padding == "valid" and (h < k or w < k):
        return
    rng = np.random.default_rng(seed)
    layer = L.Conv2D("c", ["x"], cin, cout, kernel=k, stride=stride, padding=padding)
    layer.set_weights([arrays(rng, k, k, cin, cout)])
    x = arrays(rng, n, h, w, cin)
    pads = naive_same_pads(h, k, stride) + naive_same_pads(w, k, stride) if padding == "same" else (0,) * 4
    want = naive_conv(x.astype(np.float64), layer.weights[0].astype(np.float64), stride, pads)
    got = layer(x)
    assert got.shape == want.shape == (n,) + layer.output_shape((h, w, cin))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2), h=dims, w=dims, c=chans, stride=st.sampled_from([1, 2]), seed=seeds)
def test_depthwise_same_and_padded_valid(n, h, w, c, stride, seed):
    """Stride 1 is 'same'; stride 2 is ZeroPadding2D(correct_pad) then 'valid', as Keras builds it."""
    rng = np.random.default_rng(seed)
    x = arrays(rng, n, h, w, c)
    kernel = arrays(rng, 3, 3, c, 1)
    if stride == 1:
        layer = L.DepthwiseConv2D("d", ["x"], c, 1, "same")
        layer.set_weights([kernel])
        got = layer(x)
        pads = (1, 1, 1, 1)
    else:
        pad = L.ZeroPadding2D("p", ["x"])
        xp = pad(x)
        # correct_pad: (0, 1) on an even axis, (1, 1) on an odd one.
        pads = (h % 2, 1, w % 2, 1)
        assert xp.shape == (n, h + pads[0] + 1, w + pads[2] + 1, c)
        if xp.shape[1] < 3 or xp.shape[2] < 3:
            return
        layer = L.DepthwiseConv2D("d", ["p"], c, 2, "valid")
        layer.set_weights([kernel])
        got = layer(xp)
    want = naive_conv(x.astype(np.float64), kernel.astype(np.float64), stride, pads, depthwise=True)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), dims, dims, chans), seed=seeds)
def test_batchnorm_relu6_add(shape, seed):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    x, r = arrays(rng, *shape) * 4, arrays(rng, *shape)
    gamma, beta, mean = arrays(rng, c), arrays(rng, c), arrays(rng, c)
    var = rng.uniform(0.01, 2, c).astype(np.float32)
    bn = L.BatchNormalization("bn", ["x"], c)
    bn.set_weights([gamma, beta, mean, var])
    want = (x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + 1e-3) * gamma + beta
    np.testing.assert_allclose(bn(x), want, rtol=1e-5, atol=1e-5)
    relu = L.ReLU("r", ["x"])
    want_relu = np.array([min(max(float(v), 0.0), 6.0) for v in x.ravel()], np.float32).reshape(x.shape)
    np.testing.assert_array_equal(relu(x), want_relu)
    np.testing.assert_array_equal(L.Add("a", ["x", "r"])(x, r), x + r)


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(st.integers(1, 3), dims, dims, chans), cout=chans, seed=seeds)
def test_pooling_and_dense(shape, cout, seed):
    rng = np.random.default_rng(seed)
    x = arrays(rng, *shape)
    n, h, w, c = shape
    avg = np.array([[sum(float(x[b, i, j, k]) for i in range(h) for j in range(w)) / (h * w)
                     for k in range(c)] for b in range(n)])
    mx = np.array([[max(x[b, i, j, k] for i in range(h) for j in range(w)) for k in range(c)] for b in range(n)])
    np.testing.assert_allclose(L.GlobalAveragePooling2D("g", ["x"])(x), avg, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(L.GlobalMaxPooling2D("g", ["x"])(x), mx)
    dense = L.Dense("d", ["g"], c, cout, activation="softmax")
    wk, bk = arrays(rng, c, cout), arrays(rng, cout)
    dense.set_weights([wk, bk])
    logits = np.array([[sum(avg[b, i] * wk[i, o] for i in range(c)) + bk[o] for o in range(cout)] for b in range(n)])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(dense(avg.astype(np.float32)), e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_same_padding_by_hand():
    # TF-SAME, 3x3 stride 2: 224 -> 112 with the extra row/column at the bottom/right.
    assert L.same_pads(224, 3, 2) == (0, 1)
    assert L.same_pads(225, 3, 2) == (1, 1)
    assert L.same_pads(7, 3, 1) == (1, 1)
    # Keras correct_pad for a static size: even (0, 1), odd (1, 1).
    assert L.correct_pads(112) == (0, 1)
    assert L.correct_pads(57) == (1, 1)


def test_conv_hand_computed():
    """A 1-channel 3x3 stride-2 'same' conv of a 4x4 ramp with an all-ones kernel, by hand."""
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    layer = L.Conv2D("c", ["x"], 1, 1, kernel=3, stride=2)
    layer.set_weights([np.ones((3, 3, 1, 1), np.float32)])
    # Pads (0, 1) on both axes: windows rows/cols {0,1,2} and {2,3,pad}.
    want = [[0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10, 2 + 3 + 6 + 7 + 10 + 11],
            [8 + 9 + 10 + 12 + 13 + 14, 10 + 11 + 14 + 15]]
    np.testing.assert_array_equal(layer(x)[0, :, :, 0], want)
