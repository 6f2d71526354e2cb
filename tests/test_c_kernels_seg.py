"""The segmentation kernels (dilated depthwise, bilinear resize) against their NumPy twins, AVX2
against scalar bit for bit, on channel tails, dilations 1, 2, 4, and any row split."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mobilenetv2.engines import native
from mobilenetv2.engines import numpy_kernels as K

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")
if native.available():
    from mobilenetv2.engines import c_kernels as C


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 14), w=st.integers(1, 14),
       c=st.one_of(st.integers(1, 40), st.sampled_from([8, 16, 24, 320])), dilation=st.sampled_from([1, 2, 4]),
       stride=st.sampled_from([1, 2]), relu6=st.booleans(), seed=st.integers(0, 2 ** 32 - 1), data=st.data())
def test_dilated_depthwise(n, h, w, c, dilation, stride, relu6, seed, data):
    rng = np.random.default_rng(seed)
    pads = tuple(data.draw(st.integers(0, 2 * dilation)) for _ in range(4))
    span = 2 * dilation + 1
    if h + pads[0] + pads[1] < span or w + pads[2] + pads[3] < span:
        return
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    k = rng.standard_normal((3, 3, c)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    got = C.dwconv3x3_dilated(x, k, b, stride, dilation, pads, relu6)
    scalar = C.dwconv3x3_dilated(x, k, b, stride, dilation, pads, relu6, scalar=True)
    np.testing.assert_array_equal(got, scalar)  # the same FMAs in the same order
    want = K.depthwise3x3(x.astype(np.float64), k.astype(np.float64), stride, pads, bias=b.astype(np.float64),
                          relu6=relu6, dilation=dilation)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    oh = got.shape[1]
    a = data.draw(st.integers(0, oh))
    parts = C.dwconv3x3_dilated(x, k, b, stride, dilation, pads, relu6, rows=(0, a)) + \
        C.dwconv3x3_dilated(x, k, b, stride, dilation, pads, relu6, rows=(a, oh))
    np.testing.assert_array_equal(parts, got)


def test_dilation_1_is_the_plain_depthwise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 9, 7, 19)).astype(np.float32)
    k, b = rng.standard_normal((3, 3, 19)).astype(np.float32), rng.standard_normal(19).astype(np.float32)
    np.testing.assert_allclose(C.dwconv3x3_dilated(x, k, b, 1, 1, (1, 1, 1, 1), True),
                               C.dwconv3x3(x, k, b, 1, (1, 1, 1, 1), True), rtol=1e-6, atol=1e-6)


def test_dilation_up_to_64():
    """The kernel's wrapper takes dilations 1-64 (and pads up to 2 d): 64 runs against the NumPy
    twin, 65 and 0 are refused before any C runs."""
    from mobilenetv2.errors import ArgumentError
    rng = np.random.default_rng(64)
    x = rng.standard_normal((1, 5, 4, 3)).astype(np.float32)
    k, b = rng.standard_normal((3, 3, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    pads = (64, 64, 63, 64)
    want = K.depthwise3x3(x.astype(np.float64), k.astype(np.float64), 1, pads, bias=b.astype(np.float64),
                          relu6=False, dilation=64)
    np.testing.assert_allclose(C.dwconv3x3_dilated(x, k, b, 1, 64, pads), want, rtol=1e-6, atol=1e-6)
    for d in (0, 65):
        with pytest.raises(ArgumentError, match=f"dilation {d} do not fit"):
            C.dwconv3x3_dilated(x, k, b, 1, d, (0, 0, 0, 0))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), oh=st.integers(1, 30), ow=st.integers(1, 30),
       c=st.integers(1, 21), align=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_resize_bilinear_is_its_numpy_twin_bit_for_bit(h, w, oh, ow, c, align, seed):
    x = np.random.default_rng(seed).standard_normal((2, h, w, c)).astype(np.float32)
    got = C.resize_bilinear(x, oh, ow, align)
    np.testing.assert_array_equal(got, K.resize_bilinear(x, oh, ow, align))
    a = oh // 2
    np.testing.assert_array_equal(C.resize_bilinear(x, oh, ow, align, rows=(0, a)) +
                                  C.resize_bilinear(x, oh, ow, align, rows=(a, oh)), got)


def test_resize_from_one_pixel_is_a_broadcast():
    """With align_corners (DeepLabV3's image pooling) every source index is 0, weight 1 and 0:
    exactly a broadcast.  (Without it the weights 0.8 and 0.2 of the same pixel may round.)"""
    x = np.random.default_rng(1).standard_normal((2, 1, 1, 5)).astype(np.float32)
    assert np.array_equal(C.resize_bilinear(x, 7, 4, True), np.broadcast_to(x, (2, 7, 4, 5)))


def test_resize_numpy_twin_hand_computed():
    """align_corners False, 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25 (1 clamped)."""
    x = np.array([0.0, 1.0], np.float64).reshape(1, 2, 1, 1)
    y = K.resize_bilinear(x, 4, 1)[0, :, 0, 0]
    assert np.allclose(y, [0.0, 0.25, 0.75, 1.0])
    y = K.resize_bilinear(x, 3, 1, align_corners=True)[0, :, 0, 0]
    assert np.allclose(y, [0.0, 0.5, 1.0])


@pytest.mark.parametrize("size, tf_padding, threads", [((64, 48), True, 1), ((65, 49), False, 2), ((33, 40), True, 2)])
def test_segmentation_plan_against_float64(size, tf_padding, threads):
    """A whole DeepLabV3 (random weights, depth 0.35, no shared data needed) through the C plan, batch
    of 3, against the float64 NumPy engine; any thread count gives the same bits."""
    from mobilenetv2.hf import HFMobileNetV2
    from mobilenetv2.formats.hf_config import HFConfig
    config = HFConfig(depth_multiplier=0.35, output_stride=8, tf_padding=tf_padding, head="segmentation",
                      id2label={i: str(i) for i in range(5)})
    f32, f64 = HFMobileNetV2(config, threads=threads), HFMobileNetV2(config, dtype="float64")
    f64.set_weights(f32.get_weights())
    x = np.random.default_rng(0).uniform(-1, 1, (3,) + size + (3,)).astype(np.float32)
    assert f32._plan(f32._check_input(x)) is not None
    got = f32.predict(x)
    want = f64.predict(x.astype(np.float64))
    assert got.shape == (3, -(-size[0] // 8), -(-size[1] // 8), 5)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    f32.threads = 1
    assert np.array_equal(f32.predict(x), got)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 30), c=st.integers(1, 40), extra=st.integers(0, 9), relu=st.booleans(),
       per=st.integers(0, 5), seed=st.integers(0, 2 ** 32 - 1))
def test_copy_channels(m, c, extra, relu, per, seed):
    """f32_copy_channels against its NumPy twin (a channel slice assignment, K.relu, broadcast)."""
    rng = np.random.default_rng(seed)
    stride, offset = c + extra, extra // 2
    rows = -(-m // per) if per else m
    x = rng.standard_normal((rows, c)).astype(np.float32)
    y = rng.standard_normal((m, stride)).astype(np.float32)
    want = y.copy()
    src = x[np.arange(m) // per] if per else x
    want[:, offset:offset + c] = K.relu(src) if relu else src
    native.lib.f32_copy_channels(native.as_float_ptr(x), native.as_float_ptr(y) + offset, c, stride, 0, m,
                                 per, int(relu))
    np.testing.assert_array_equal(y, want)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 20), kh=st.integers(1, 7),
       kw=st.integers(1, 7), seed=st.integers(0, 2 ** 32 - 1))
def test_avgpool_window_is_its_numpy_twin_bit_for_bit(h, w, c, kh, kw, seed):
    kh, kw = min(kh, h), min(kw, w)
    x = np.random.default_rng(seed).standard_normal((2, h, w, c)).astype(np.float32)
    want = K.avg_pool(x, kh, kw)
    y = np.zeros_like(want)
    oh, ow = want.shape[1:3]
    p = native.as_float_ptr
    native.lib.f32_avgpool_window(p(x), p(y), 2, h, w, c, kh, kw, oh, ow, 0, oh)
    np.testing.assert_array_equal(y, want)


def test_tf_slim_head_runs_on_the_c_plan():
    """transformers' classifier with TF-slim's 7x7 head (random weights): the C plan, any size,
    against the float64 engine; 1 and 2 threads give the same bits."""
    from mobilenetv2.hf import HFMobileNetV2
    from mobilenetv2.formats.hf_config import HFConfig
    config = HFConfig(depth_multiplier=0.35, head="classification", id2label={i: str(i) for i in range(11)})
    f32, f64 = HFMobileNetV2(config, top_pooling="7x7", threads=2), HFMobileNetV2(config, "float64", top_pooling="7x7")
    f64.set_weights(f32.get_weights())
    for size in ((320, 320), (96, 96), (250, 224)):
        x = np.random.default_rng(0).uniform(-1, 1, (2,) + size + (3,)).astype(np.float32)
        assert f32._plan(f32._check_input(x)) is not None
        got, want = f32.predict(x), f64.predict(x.astype(np.float64))
        assert got.shape == want.shape and np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
        f32.threads = 1
        assert np.array_equal(f32.predict(x), got)
        f32.threads = 2


def _isas():
    return native.isas() if native.available() else []


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("dilation,stride", [(1, 1), (2, 1), (4, 1), (2, 2)])
def test_dilated_depthwise_grid_on_every_isa(isa, dilation, stride):
    """Every channel tail 1..33 (the 16-lane masks, the 8-lane AVX2 tail) and widths whose interior
    runs leave every remainder of the 8-pixel (AVX-512) and 4-pixel (AVX2) blocks: bit for bit the
    scalar twin, and the float64 NumPy engine within float32 rounding."""
    rng = np.random.default_rng(1000 * dilation + stride)
    pads = (dilation, dilation, dilation, dilation)
    for c in range(1, 34):
        for w in range(2 * dilation + 1, 2 * dilation + 1 + 9 * stride, stride):
            x = rng.standard_normal((1, 2 * dilation + 3, w, c)).astype(np.float32)
            k = rng.standard_normal((3, 3, c)).astype(np.float32)
            b = rng.standard_normal(c).astype(np.float32)
            got = C.dwconv3x3_dilated(x, k, b, stride, dilation, pads, True, scalar=isa)
            np.testing.assert_array_equal(got, C.dwconv3x3_dilated(x, k, b, stride, dilation, pads, True,
                                                                   scalar=True), err_msg=f"{isa} c={c} w={w}")
            want = K.depthwise3x3(x.astype(np.float64), k.astype(np.float64), stride, pads,
                                  bias=b.astype(np.float64), relu6=True, dilation=dilation)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_resize_scales_refuse_an_empty_side_and_are_pytorch_s():
    """PyTorch's scales: in / out, or (in - 1) / (out - 1) with align_corners (0 for one output);
    a side of 0 is refused, not a division by zero."""
    from mobilenetv2.errors import ArgumentError
    assert C.resize_scales(4, 5, 8, 10, False) == (np.float32(0.5), np.float32(0.5))
    assert C.resize_scales(5, 3, 9, 1, True) == (np.float32(0.5), np.float32(0))
    for sizes in [(0, 5, 8, 9), (4, 5, 0, 9), (4, 5, 8, 0)]:
        with pytest.raises(ArgumentError, match=r"sizes must be from 1 up"):
            C.resize_scales(*sizes, False)
