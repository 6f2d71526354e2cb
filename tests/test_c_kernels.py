"""Every C kernel, on every ISA this CPU has (scalar, AVX2, AVX-512) and as its _scalar twin,
against its NumPy twin computed in float64, on awkward shapes and on deterministic grids of every
channel count 1..33 and every tile remainder; the promise of the same bits on every ISA; and the
promise the thread split relies on: any row range gives bit-identical outputs."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mobilenetv2.engines import native
from mobilenetv2.engines import numpy_kernels as K
from mobilenetv2.network.layers import same_pads

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")
if native.available():
    from mobilenetv2.engines import c_kernels as C

seeds = st.integers(0, 2 ** 32 - 1)
# True: the portable _scalar twin; an ISA name: the dispatcher on that ISA (every one this CPU has)
ISAS = native.isas()
scalar = st.sampled_from([True] + ISAS)
# channel counts the network has (multiples of 8: the vector paths), drawn beside any other
net_channels = st.sampled_from([8, 16, 24, 32, 40, 48, 64])


def close(got, want):
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6 * scale)


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def checked_pointwise(rng, m, cin, cout, relu6, res, sc, x_scale=1.0, w_scale=1.0):
    """Random x, w, bias (and residual), the C pointwise result, checked against the float64
    NumPy twin: returns (x, packed, residual, result)."""
    x, w, b = rnd(rng, m, cin) * np.float32(x_scale), rnd(rng, cin, cout) * np.float32(w_scale), rnd(rng, cout)
    r = rnd(rng, m, cout) if res else None
    packed = C.pack_pointwise(w, b)
    got = C.pointwise(x, packed, cin, cout, relu6=relu6, residual=r, scalar=sc)
    want = K.pointwise(x.astype(np.float64)[None, None], w.astype(np.float64), bias=b, relu6=relu6,
                       residual=None if r is None else r.astype(np.float64)[None, None])[0, 0]
    close(got, want)
    return x, packed, r, got


@settings(max_examples=80, deadline=None)
@given(m=st.integers(1, 200), cin=st.integers(1, 70), cout=st.integers(1, 70), relu6=st.booleans(),
       res=st.booleans(), sc=scalar, seed=seeds)
def test_pointwise(m, cin, cout, relu6, res, sc, seed):
    rng = np.random.default_rng(seed)
    x, packed, r, got = checked_pointwise(rng, m, cin, cout, relu6, res, sc, x_scale=2.0)
    a = int(rng.integers(0, m + 1))
    split = C.pointwise(x, packed, cin, cout, relu6, r, rows=(0, a), scalar=sc) + \
        C.pointwise(x, packed, cin, cout, relu6, r, rows=(a, m), scalar=sc)
    np.testing.assert_array_equal(split, got)


@settings(max_examples=12, deadline=None)
@given(m=st.integers(1, 100), cin=st.sampled_from([320, 960]), cout=st.sampled_from([160, 1000]),
       relu6=st.booleans(), res=st.booleans(), sc=scalar, seed=seeds, data=st.data())
def test_pointwise_large_weights(m, cin, cout, relu6, res, sc, seed, data):
    """Weights past the kernel's cached-weights limit (the 7x7 layers, the dense head) go through
    row blocks panel by panel; threads may split them by output panels: same bits either way."""
    rng = np.random.default_rng(seed)
    x, packed, r, got = checked_pointwise(rng, m, cin, cout, relu6, res, sc, w_scale=0.1)
    npanels = -(-cout // 16)
    a = data.draw(st.integers(0, npanels))
    split = C.pointwise(x, packed, cin, cout, relu6, r, panels=(0, a), scalar=sc) + \
        C.pointwise(x, packed, cin, cout, relu6, r, panels=(a, npanels), scalar=sc)
    np.testing.assert_array_equal(split, got)


@pytest.mark.parametrize("cout", [80, 144, 152, 160])
def test_pointwise_every_panel_split(cout):
    """Panels [0, a) and [a, end) for every a, as threads sharing a layer's output channels run
    them: every share's own grouping of its panels (5 left go as 3 + 2, a half panel joins the
    group before it) gives the bits of the whole layer, on every ISA and the scalar twin."""
    rng = np.random.default_rng(cout)
    cin, m = 40, 13
    w, b, x = rnd(rng, cin, cout), rnd(rng, cout), rnd(rng, m, cin)
    packed = C.pack_pointwise(w, b)
    whole = same_on_every_isa(lambda isa: C.pointwise(x, packed, cin, cout, True, scalar=isa))
    npanels = -(-cout // 16)
    for a in range(npanels + 1):
        split = same_on_every_isa(lambda isa: C.pointwise(x, packed, cin, cout, True, panels=(0, a), scalar=isa) +
                                  C.pointwise(x, packed, cin, cout, True, panels=(a, npanels), scalar=isa))
        np.testing.assert_array_equal(split, whole, err_msg=f"panels split at {a}")


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 3), c=st.integers(1, 1100), scale=st.sampled_from([1.0, 30.0, 1e4]), sc=scalar,
       seed=seeds)
def test_softmax(n, c, scale, sc, seed):
    x = rnd(np.random.default_rng(seed), n, c) * np.float32(scale)
    got = C.softmax(x, scalar=sc)
    want = K.softmax(x.astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(1, 1, 5, 7), (3, 3, 13), (3, 3, 3, 32), (40, 1), (1, 1), (13,)]),
       sc=scalar, seed=seeds)
def test_fold_batchnorm_gives_the_numpy_twins_bits(shape, sc, seed):
    rng = np.random.default_rng(seed)
    c = shape[-1]
    w = rnd(rng, *shape)
    gamma, beta, mean = rnd(rng, c), rnd(rng, c), rnd(rng, c)
    var = np.abs(rnd(rng, c)) * np.float32(rng.choice([1e-6, 1.0, 1e3]))
    got_w, got_b = C.fold_batchnorm(w, gamma, beta, mean, var, 1e-3, scalar=sc)
    want_w, want_b = K.fold_batchnorm(w, gamma, beta, mean, var, eps=1e-3)
    np.testing.assert_array_equal(got_w, want_w)
    np.testing.assert_array_equal(got_b, want_b)


def test_fold_batchnorm_rejects_what_would_be_nan():
    w, ones = np.ones((3, 4), np.float32), np.ones(4, np.float32)
    # eps 0 is allowed (var > 0 alone keeps it finite): var 4 halves w, bias beta - mean / 2
    got_w, got_b = C.fold_batchnorm(w, ones, ones, ones, 4 * ones, 0.0)
    np.testing.assert_array_equal(got_w, w / 2)
    np.testing.assert_array_equal(got_b, ones / 2)
    with pytest.raises(ValueError, match="eps must be a finite number from 0 up"):
        C.fold_batchnorm(w, ones, ones, ones, ones, -1e-3)
    with pytest.raises(ValueError, match="var"):
        C.fold_batchnorm(w, ones, ones, ones, -ones, 1e-3)
    with pytest.raises(ValueError, match="shape"):
        C.fold_batchnorm(w, ones[:3], ones, ones, ones, 1e-3)


def test_softmax_refuses_rows_of_no_classes_and_non_finite_values():
    """The C softmax reads a row's first value for its maximum: a row of no classes never reaches it."""
    for x, says in ((np.zeros((2, 0), np.float32), "no classes"), (np.float32([[1.0, np.nan]]), "NaN or inf"),
                    (np.float32([[np.inf, 0.0]]), "NaN or inf")):
        with pytest.raises(ValueError, match=says):
            C.softmax(x)


def test_pointwise_panels_write_only_their_channels():
    rng = np.random.default_rng(3)
    x, w, b = rnd(rng, 7, 5), rnd(rng, 5, 40), rnd(rng, 40)
    packed = C.pack_pointwise(w, b)
    full = C.pointwise(x, packed, 5, 40)
    part = C.pointwise(x, packed, 5, 40, panels=(1, 2))
    np.testing.assert_array_equal(part[:, 16:32], full[:, 16:32])
    assert not part[:, :16].any() and not part[:, 32:].any()
    with pytest.raises(ValueError, match="outside"):
        C.pointwise(x, packed, 5, 40, panels=(0, 4))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 13), w=st.integers(1, 30), c=st.one_of(st.integers(1, 40), net_channels),
       stride=st.sampled_from([1, 2]), keras_pads=st.booleans(), relu6=st.booleans(), sc=scalar,
       seed=seeds, data=st.data())
def test_dwconv3x3(n, h, w, c, stride, keras_pads, relu6, sc, seed, data):
    rng = np.random.default_rng(seed)
    if keras_pads:  # what the network uses: 'same' at stride 1, correct_pad + 'valid' at stride 2
        pads = (1, 1, 1, 1) if stride == 1 else (h % 2, 1, w % 2, 1)
    else:
        pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    if h + pads[0] + pads[1] < 3 or w + pads[2] + pads[3] < 3:
        return
    x, k, b = rnd(rng, n, h, w, c), rnd(rng, 3, 3, c), rnd(rng, c)
    got = C.dwconv3x3(x, k, b, stride, pads, relu6=relu6, scalar=sc)
    want = K.depthwise3x3(x.astype(np.float64), k.astype(np.float64), stride, pads, bias=b, relu6=relu6)
    close(got, want)
    oh = got.shape[1]
    a = int(rng.integers(0, oh + 1))
    parts = C.dwconv3x3(x, k, b, stride, pads, relu6, rows=(0, a), scalar=sc) + \
        C.dwconv3x3(x, k, b, stride, pads, relu6, rows=(a, oh), scalar=sc)
    np.testing.assert_array_equal(parts, got)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 2), h=st.integers(1, 15), w=st.integers(1, 40),
       cout=st.one_of(st.integers(1, 80), net_channels), relu6=st.booleans(), sc=scalar, seed=seeds)
def test_stem(n, h, w, cout, relu6, sc, seed):
    rng = np.random.default_rng(seed)
    pads = same_pads(h, 3, 2) + same_pads(w, 3, 2)
    x, k, b = rnd(rng, n, h, w, 3), rnd(rng, 3, 3, 3, cout), rnd(rng, cout)
    got = C.stem(x, k, b, pads, relu6=relu6, scalar=sc)
    want = K.conv2d(x.astype(np.float64), k.astype(np.float64), 2, pads, bias=b, relu6=relu6)
    close(got, want)
    oh = got.shape[1]
    a = int(rng.integers(0, oh + 1))
    parts = C.stem(x, k, b, pads, relu6, rows=(0, a), scalar=sc) + C.stem(x, k, b, pads, relu6, rows=(a, oh), scalar=sc)
    np.testing.assert_array_equal(parts, got)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 40), sc=scalar, seed=seeds)
def test_global_pooling(n, h, w, c, sc, seed):
    x = rnd(np.random.default_rng(seed), n, h, w, c)
    close(C.global_pool(x, "avg", scalar=sc), K.global_avg_pool(x.astype(np.float64)))
    np.testing.assert_array_equal(C.global_pool(x, "max", scalar=sc), K.global_max_pool(x))


def test_wrappers_reject_bad_arrays():
    w = np.zeros((4, 5), np.float32)
    packed = C.pack_pointwise(w, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="float32"):
        C.pointwise(np.zeros((3, 4)), packed, 4, 5)
    with pytest.raises(ValueError, match="do not fit"):
        C.pointwise(np.zeros((3, 6), np.float32), packed, 4, 5)
    with pytest.raises(ValueError, match="do not fit"):
        C.dwconv3x3(np.zeros((1, 5, 5, 4), np.float32), np.zeros((3, 3, 3), np.float32),
                    np.zeros(4, np.float32), 1, (1, 1, 1, 1))


def test_wrappers_copy_arrays_at_an_odd_address_before_c_reads_them(monkeypatch):
    """A C-contiguous float32 array one byte off alignment (np.frombuffer at an offset) is copied
    to an aligned one: C loads its floats as floats (UBSan: 'load of misaligned address' in
    f32_resize_bilinear, reached from hf_processing.post_process_semantic_segmentation)."""
    def odd(a):
        out = np.frombuffer(b"\0" + a.tobytes(), a.dtype, offset=1).reshape(a.shape)
        assert not out.flags.aligned
        return out

    def checked(a):
        assert a.flags.aligned and a.ctypes.data % 4 == 0, "a misaligned array went to C"
        return native.as_float_ptr(a)
    monkeypatch.setattr(C, "_ptr", checked)
    rng = np.random.default_rng(0)
    x = rnd(rng, 1, 9, 7, 5)
    want = K.resize_bilinear(x.astype(np.float64), 33, 20)
    close(C.resize_bilinear(odd(x), 33, 20), want)
    np.testing.assert_array_equal(C.relu6(odd(x)), np.clip(x, 0, 6))
    w, b = rnd(rng, 4, 5), rnd(rng, 5)
    np.testing.assert_array_equal(C.pack_pointwise(odd(w), odd(b)), C.pack_pointwise(w, b))
    with pytest.raises(ValueError, match="aligned"):  # an output C would write: refused, not copied
        C.stem_row(rnd(rng, 5, 5, 3), rnd(rng, 3, 3, 3, 8), rnd(rng, 8), (1, 1, 1, 1), 0,
                   out=np.frombuffer(bytearray(3 * 8 * 4 + 1), np.float32, offset=1).reshape(3, 8))


def test_wrappers_reject_rows_and_pools_that_would_leave_the_arrays():
    x = np.zeros((1, 5, 5, 4), np.float32)
    k, b = np.zeros((3, 3, 4), np.float32), np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="rows"):
        C.dwconv3x3(x, k, b, 1, (1, 1, 1, 1), rows=(0, 6))
    with pytest.raises(ValueError, match="rows"):
        C.stem(np.zeros((1, 5, 5, 3), np.float32), np.zeros((3, 3, 3, 8), np.float32),
               np.zeros(8, np.float32), (1, 1, 1, 1), rows=(2, 1))
    packed = C.pack_pointwise(np.zeros((4, 5), np.float32), np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="float32"):
        C.pointwise(np.zeros((3, 4), np.float32), packed.astype(np.float64)[::2], 4, 5)
    with pytest.raises(ValueError, match="kind"):
        C.global_pool(x, "sum")
    with pytest.raises(ValueError, match="no pixels"):
        C.global_pool(np.zeros((1, 0, 3, 4), np.float32), "max")


def test_pooling_on_the_scalar_path():
    """The pools have no exported _scalar twin: run them in a process forced onto the scalar path."""
    import os
    import subprocess
    import sys
    code = (
        "import numpy as np\n"
        "from mobilenetv2.engines import native, c_kernels as C, numpy_kernels as K\n"
        "assert native.backend() == 'C scalar', native.backend()\n"
        "x = np.random.default_rng(1).standard_normal((2, 5, 3, 13)).astype(np.float32)\n"
        "np.testing.assert_allclose(C.global_pool(x, 'avg'), K.global_avg_pool(x.astype(np.float64)),"
        " rtol=1e-5, atol=1e-6)\n"
        "np.testing.assert_array_equal(C.global_pool(x, 'max'), K.global_max_pool(x))\n")
    env = dict(os.environ, MNV2_FORCE_SCALAR="1")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# ---- deterministic grids: every channel count 1..33, every tile remainder, every ISA ----

def same_on_every_isa(call):
    """call(isa) on every ISA this CPU has and on the _scalar twin: all bit-identical; returns it."""
    outs = {isa: call(isa) for isa in [True] + ISAS}
    first = outs[True]
    for isa, got in outs.items():
        np.testing.assert_array_equal(got, first, err_msg=f"ISA {isa} differs from the scalar twin")
    return first


@pytest.mark.parametrize("cin", [1, 7, 33, 400])  # 400: a blocked sum (128 + 128 + 128 + 16)
def test_pointwise_grid_every_channel_count_and_row_remainder(cin):
    """cout 1..33 (every lane of a 16-wide panel, the 8-wide last panel), 64..80 (the 4-panel
    tiles; 80: 5 panels, which go as 3 + 2), 144 and 152 (9 panels: 4 + 3 + 2; 9 and the half one:
    4 + 4 + 1 with it); rows 1..25 (every remainder of the 6-, 8- and 12-row tiles); ReLU6 and
    residual."""
    rng = np.random.default_rng(cin)
    couts = list(range(1, 34)) + [64, 72, 80, 144, 152]
    rows = range(1, 26) if cin < 400 else (1, 5, 13, 25)
    for cout in couts:
        check_pointwise_rows(rng, cin, cout, rows)


def check_pointwise_rows(rng, cin, cout, rows):
    """For each row count in rows, with and without ReLU6 and residual: the same bits on every ISA
    and close to the float64 NumPy twin."""
    w, b = rnd(rng, cin, cout), rnd(rng, cout)
    packed = C.pack_pointwise(w, b)
    for m in rows:
        x, r = rnd(rng, m, cin), rnd(rng, m, cout)
        for relu6, res in ((False, None), (True, r)):
            got = same_on_every_isa(lambda isa: C.pointwise(x, packed, cin, cout, relu6, res, scalar=isa))
            want = K.pointwise(x.astype(np.float64)[None, None], w.astype(np.float64), bias=b,
                               relu6=relu6, residual=None if res is None else res.astype(np.float64)[None, None])
            close(got, want[0, 0])


@pytest.mark.parametrize("cout", [8, 16, 24])
@pytest.mark.parametrize("cin", [1, 16, 24, 72, 96, 127, 128, 144, 200])
def test_pointwise_narrow_cout_row_pairs_every_group_and_block(cin, cout):
    """cout 8, 16 and 24 run on AVX-512 as row pairs with the two rows interleaved (16, 12 or 8
    pairs at a time, then fewer, and an odd row, in row blocks of whole groups): rows 1..69 and a
    few hundred, sums of one block and blocked ones (128: 64 + 64; 144: 64 + 64 + 16; 200: 64 x 3
    + 8), ReLU6 and residual, the same bits on every ISA and close to float64."""
    check_pointwise_rows(np.random.default_rng(cin + cout), cin, cout, list(range(1, 70)) + [224, 225, 3137])


def test_pointwise_long_sums_are_more_accurate_than_one_chain():
    """K = 1280 (the dense head) sums in 64-channel blocks: closer to the exact sum than a single
    float32 FMA chain over the 1280 products (computed here in NumPy, one product at a time)."""
    rng = np.random.default_rng(11)
    cin, cout, m = 1280, 16, 64
    x, w = rng.uniform(0, 1, (m, cin)).astype(np.float32), rng.uniform(0, 1, (cin, cout)).astype(np.float32)
    b = np.zeros(cout, np.float32)
    got = C.pointwise(x, C.pack_pointwise(w, b), cin, cout)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    chain = np.zeros((m, cout), np.float32)
    for c in range(cin):  # float32 rounding after every step (a multiply-add chain)
        chain = (chain.astype(np.float64) + x[:, c:c + 1].astype(np.float64) * w[c]).astype(np.float32)
    err_blocked = np.abs(got - exact).mean()
    err_chain = np.abs(chain - exact).mean()
    assert err_blocked < 0.5 * err_chain, (err_blocked, err_chain)


@pytest.mark.parametrize("stride", [1, 2])
def test_dwconv_grid_every_channel_count_and_width(stride):
    """c 1..33 (every lane of a 16- and 8-wide chunk), widths 1..19 at stride 1 and 1..37 at stride 2
    (every remainder of the 16-, 8-, 4-pixel blocks), with each pad pattern the network has."""
    rng = np.random.default_rng(stride)
    widths = range(1, 20) if stride == 1 else range(1, 38, 2)
    for c in range(1, 34):
        k, b = rnd(rng, 3, 3, c), rnd(rng, c)
        for w in widths:
            h = 3 + w % 3
            x = rnd(rng, 1, h, w, c)
            for pads in ((1, 1, 1, 1), (h % 2, 1, w % 2, 1), (0, 0, 0, 0)):
                if h + pads[0] + pads[1] < 3 or w + pads[2] + pads[3] < 3:
                    continue
                relu6 = bool((c + w) % 2)
                got = same_on_every_isa(lambda isa: C.dwconv3x3(x, k, b, stride, pads, relu6, scalar=isa))
                close(got, K.depthwise3x3(x.astype(np.float64), k.astype(np.float64), stride, pads,
                                          bias=b, relu6=relu6))


@pytest.mark.parametrize("stride", [1, 2])
def test_dwconv_grid_row_pairs_heights_and_channel_groups(stride):
    """The AVX-512 kernel computes two output rows per pass (a lone last row on its own), the rows of
    a call in groups of 8, channels in groups sized from L1 (at least 64) with a masked tail, and
    splits a row's interior pixels into blocks of 1..8: heights 1..12 (odd and even row counts,
    every group remainder), interiors of 1..29 pixels, channel counts around 16, 64 and beyond, and
    row ranges starting on odd rows.  Same bits on every ISA, close to float64."""
    rng = np.random.default_rng(10 + stride)
    widths = (3, 5, 12, 13, 22, 31) if stride == 1 else (3, 6, 23, 24, 43, 61)
    for c in (1, 15, 17, 33, 64, 65, 97, 128, 130):
        k, b = rnd(rng, 3, 3, c), rnd(rng, c)
        for h in range(1, 13):
            for w in widths[(h + c) % 2::2]:
                x = rnd(rng, 1, h, w, c)
                pads = (1, 1, 1, 1) if stride == 1 else (h % 2, 1, w % 2, 1)
                if h + pads[0] + pads[1] < 3:
                    continue
                relu6 = bool((c + h) % 2)
                got = same_on_every_isa(lambda isa: C.dwconv3x3(x, k, b, stride, pads, relu6, scalar=isa))
                close(got, K.depthwise3x3(x.astype(np.float64), k.astype(np.float64), stride, pads,
                                          bias=b, relu6=relu6))
                oh = got.shape[1]
                for a in range(1, oh, 3):
                    parts = same_on_every_isa(
                        lambda isa: C.dwconv3x3(x, k, b, stride, pads, relu6, rows=(0, a), scalar=isa) +
                        C.dwconv3x3(x, k, b, stride, pads, relu6, rows=(a, oh), scalar=isa))
                    np.testing.assert_array_equal(parts, got)


def test_stem_grid_every_channel_count():
    rng = np.random.default_rng(5)
    for cout in range(1, 34):
        x, k, b = rnd(rng, 1, 9, 11, 3), rnd(rng, 3, 3, 3, cout), rnd(rng, cout)
        pads = same_pads(9, 3, 2) + same_pads(11, 3, 2)
        got = same_on_every_isa(lambda isa: C.stem(x, k, b, pads, relu6=True, scalar=isa))
        close(got, K.conv2d(x.astype(np.float64), k.astype(np.float64), 2, pads, bias=b, relu6=True))


def test_stem_grid_direct_interior_tiles():
    """On AVX-512 (cout 16, 32, 48, 64) and AVX2 (cout a multiple of 16) every stem pixel runs in
    SIMD tiles: a row's interior (three input rows inside the image) straight from the image in
    near-equal tiles of at most 12 (cout 16, 32), 8 (48) or 6 (64, and AVX2's 16-channel panels)
    pixels, the border pixels and the rows over the padding from zero-padded strips of their input
    columns; other couts (and the scalar twin) through the gather.  Interiors of 11..27 pixels
    (every tile size and split), each pad pattern the network has and symmetric pads of 0..2
    (strips with one and two padding columns, top and bottom rows of padding), several images,
    ReLU6 on and off.  Same bits on every ISA, close to float64."""
    rng = np.random.default_rng(7)
    for cout in (8, 16, 24, 32, 48, 64, 72):
        k, b = rnd(rng, 3, 3, 3, cout), rnd(rng, cout)
        for w in range(23, 58, 3):
            h = 5 + w % 4
            x = rnd(rng, 2, h, w, 3)
            for pads in (same_pads(h, 3, 2) + same_pads(w, 3, 2), (1, 1, 1, 1), (0, 0, 0, 0), (2, 2, 2, 2)):
                relu6 = bool((w + cout) % 2)
                got = same_on_every_isa(lambda isa: C.stem(x, k, b, pads, relu6=relu6, scalar=isa))
                close(got, K.conv2d(x.astype(np.float64), k.astype(np.float64), 2, pads, bias=b, relu6=relu6))


def test_pool_softmax_relu6_grid_every_channel_count():
    rng = np.random.default_rng(6)
    for c in range(1, 41):
        x = rnd(rng, 2, 3, 5, c) * np.float32(4)
        avg = same_on_every_isa(lambda isa: C.global_pool(x, "avg", scalar=isa))
        close(avg, K.global_avg_pool(x.astype(np.float64)))
        mx = same_on_every_isa(lambda isa: C.global_pool(x, "max", scalar=isa))
        np.testing.assert_array_equal(mx, K.global_max_pool(x))
        logits = rnd(rng, 2, c) * np.float32(10)
        sm = same_on_every_isa(lambda isa: C.softmax(logits, scalar=isa))
        np.testing.assert_allclose(sm, K.softmax(logits.astype(np.float64)), rtol=2e-6, atol=1e-9)
        v = rng.uniform(-3, 9, c).astype(np.float32)
        np.testing.assert_array_equal(same_on_every_isa(lambda isa: C.relu6(v, scalar=isa)), K.relu6(v))


@pytest.mark.parametrize("c", [1, 8, 15, 16, 17, 40, 1280])
def test_global_pooling_every_channel_split(c):
    """Channels [0, 16 a) and [16 a, c) for every a, as threads sharing the channels of the
    pointwise conv before the pooling run them (csrc/plan.c): the whole pooling's bits, on every
    ISA and the scalar twin, and nothing written outside a share's channels."""
    x = rnd(np.random.default_rng(c), 2, 3, 5, c) * np.float32(4)
    for kind in ("avg", "max"):
        whole = same_on_every_isa(lambda isa: C.global_pool(x, kind, scalar=isa))
        for a in range(-(-c // 16) + 1):
            k = min(16 * a, c)
            lo = same_on_every_isa(lambda isa: C.global_pool(x, kind, scalar=isa, channels=(0, k)))
            hi = same_on_every_isa(lambda isa: C.global_pool(x, kind, scalar=isa, channels=(k, c)))
            assert not lo[:, k:].any() and not hi[:, :k].any()
            np.testing.assert_array_equal(lo[:, :k], whole[:, :k])
            np.testing.assert_array_equal(hi[:, k:], whole[:, k:])


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_count_nonfinite_finds_each_kind_in_every_lane_and_tail(bad):
    """Every position of arrays of 1..40 values (the whole 8- and 16-lane steps and every tail)."""
    big = np.float32(3.4e38)  # the largest finite values must not count
    for n in range(1, 41):
        for i in range(n):
            x = np.full(n, big, np.float32)
            x[::2] = -big
            x[i] = bad
            for isa in [True] + ISAS:
                assert C.count_nonfinite(x, scalar=isa) == 1, (n, i, isa)
        x = np.full(n, bad, np.float32)
        for isa in [True] + ISAS:
            assert C.count_nonfinite(x, scalar=isa) == n
            assert C.count_nonfinite(np.zeros(n, np.float32), scalar=isa) == 0


@pytest.mark.parametrize("sc", [True] + ISAS)
def test_relu6_of_minus_zero_is_plus_zero_and_a_linear_minus_zero_stays(sc):
    """A zero input against negative weights, with a bias of -0.0, sums to -0.0 on every path:
    0 x -w is -0.0 and -0.0 + -0.0 is -0.0.  ReLU6 gives +0.0 there (max(-0, +0) as the vector
    paths' max instruction returns its second operand: the same bits on every ISA), and the linear
    output keeps -0.0.  Channel counts with a vector part and a tail (19)."""
    minus = np.float32(-0.0)

    def signs(a):
        return set(np.signbit(a).ravel().tolist())

    x = np.zeros((37, 11), np.float32)
    packed = C.pack_pointwise(-np.ones((11, 19), np.float32), np.full(19, minus))
    assert signs(C.pointwise(x, packed, 11, 19, relu6=True, scalar=sc)) == {False}
    assert signs(C.pointwise(x, packed, 11, 19, relu6=False, scalar=sc)) == {True}
    for stride in (1, 2):
        x = np.zeros((1, 7, 9, 19), np.float32)
        w, b = -np.ones((3, 3, 19), np.float32), np.full(19, minus)
        assert signs(C.dwconv3x3(x, w, b, stride, (1, 1, 1, 1), relu6=True, scalar=sc)) == {False}
        assert signs(C.dwconv3x3(x, w, b, stride, (1, 1, 1, 1), relu6=False, scalar=sc)) == {True}
    x = np.zeros((1, 9, 11, 3), np.float32)
    w, b = -np.ones((3, 3, 3, 19), np.float32), np.full(19, minus)
    assert signs(C.stem(x, w, b, (0, 1, 0, 1), relu6=True, scalar=sc)) == {False}
    assert signs(C.stem(x, w, b, (0, 1, 0, 1), relu6=False, scalar=sc)) == {True}
