"""The stem fused into the first inverted-residual block (its ring of depthwise input rows filled
by the stem from the image): fused against the separate stem op bit for bit, on every instruction
set, odd sizes (every TF-SAME padding pattern), batches of 1-3 and 1 to 16 threads; against the
float64 NumPy engine; the DeepLabV3 lowering; the fusion rule; the profile's names and MACs."""
import numpy as np
import pytest

from mobilenetv2.network import arch
from mobilenetv2.engines import c_kernels as C
from mobilenetv2.engines import numpy_kernels as K
from mobilenetv2.engines import native
from mobilenetv2.engines import plan as P
from mobilenetv2.hf import HFMobileNetV2
from mobilenetv2.formats.hf_config import HFConfig
from mobilenetv2.network.layers import same_pads
from mobilenetv2.model import MobileNetV2

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")

BLOCK = 6  # MNV2_OP_BLOCK
STEM = 0   # MNV2_OP_STEM


def first_ops(model):
    """(kind, the layers the op computes) of the first two ops of each of the model's plans."""
    return [[(op["kind"], op.get("layers")) for op in plan.ops[:2]] for plan in model._plans.values()]


def stem_fused(model):
    plans = list(model._plans.values())
    assert plans
    return all(plan.ops[0]["kind"] == BLOCK and plan.ops[0].get("stem_w") is not None for plan in plans)


def fuse_blocks(monkeypatch, stem):
    """Every block fused; the stem too if ``stem``."""
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", 0)
    monkeypatch.setattr(P, "FUSE_MIN_ROWS", 1)
    monkeypatch.setattr(P, "FUSE_MAX_WEIGHT_BYTES", float("inf"))
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", 0 if stem else float("inf"))


def isa_or_skip(isa):
    if isa not in native.isas():
        pytest.skip(f"this CPU (or OS) cannot run {isa} (have {native.isas()})")


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
def test_stem_row_is_the_stems_row_into_any_buffer(isa):
    """f32_stem3x3s2_row (what fills the fused block's ring) writes row i of one image into a
    buffer of its own: the bits of that row of f32_stem3x3s2 and its _scalar twin, close to the
    float64 NumPy conv, for channel counts with and without AVX-512 interior tiles (16, 32, 48 and
    64 have them), widths leaving every tile remainder, and each padding pattern."""
    isa_or_skip(isa)
    rng = np.random.default_rng(11)
    for cout in (8, 16, 24, 32, 48, 64, 72):
        k, b = rng.uniform(-1, 1, (3, 3, 3, cout)).astype(np.float32), rng.uniform(-1, 1, cout).astype(np.float32)
        for h, w in ((7, 29), (8, 40), (5, 57), (3, 4)):
            x = rng.uniform(-1, 1, (2, h, w, 3)).astype(np.float32)
            for pads in (same_pads(h, 3, 2) + same_pads(w, 3, 2), (1, 1, 1, 1), (0, 0, 0, 0)):
                whole = C.stem(x, k, b, pads, relu6=True, scalar=True)
                close = K.conv2d(x.astype(np.float64), k.astype(np.float64), 2, pads, bias=b, relu6=True)
                assert np.abs(whole - close).max() < 1e-5
                for n in range(2):
                    for i in range(whole.shape[1]):
                        got = C.stem_row(x[n], k, b, pads, i, relu6=True, scalar=isa)
                        np.testing.assert_array_equal(got, whole[n, i], err_msg=f"{isa} cout {cout} {h}x{w} {pads}")
    with pytest.raises(ValueError, match="row 3 outside"):
        C.stem_row(np.zeros((5, 5, 3), np.float32), np.zeros((3, 3, 3, 8), np.float32),
                   np.zeros(8, np.float32), (1, 1, 1, 1), 3)


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("alpha,shape,batch", [
    (1.0, (224, 224), 1), (0.5, (225, 225), 2), (0.35, (33, 47), 3), (0.75, (32, 33), 1),
    (1.4, (40, 35), 2)])
def test_fused_stem_gives_the_same_bits_as_the_separate_stem(monkeypatch, isa, alpha, shape, batch):
    """Only the stem's fusion differs between the two models (every block fused in both, the
    first one reading the stem's whole tensor in one, filling its ring from the image in the
    other): the stem rows are the same kernel's rows either way, so the bits must agree for every
    thread count (each thread computes its own halo rows), band height (1 to 4 rows) and padding
    (odd sizes pad differently at the top/left and bottom/right)."""
    isa_or_skip(isa)
    x = np.random.default_rng(5).uniform(-1, 1, (batch,) + shape + (3,)).astype(np.float32)
    with native.use_isa(isa):
        fuse_blocks(monkeypatch, stem=False)
        separate = MobileNetV2(shape + (3,), alpha=alpha, weights=None, classifier_activation=None, threads=1)
        want = separate.predict(x)
        assert all(ops[0][0] == STEM for ops in first_ops(separate))
        fuse_blocks(monkeypatch, stem=True)
        for max_band in (1, 4):
            monkeypatch.setattr(P, "MAX_BAND", max_band)
            fused = MobileNetV2(shape + (3,), alpha=alpha, weights=None, classifier_activation=None, threads=1)
            fused.set_weights(separate.get_weights())
            for threads in (1, 2, 3, 4, 16):
                fused.threads = threads
                np.testing.assert_array_equal(fused.predict(x), want, err_msg=f"{isa} {threads} threads")
            assert stem_fused(fused)
            assert first_ops(fused)[0][0] == (BLOCK, ["Conv1", "expanded_conv_depthwise", "expanded_conv_project"])


def test_fused_stem_matches_the_float64_engine(monkeypatch):
    """The fused plan against the NumPy engine in float64 (its own stem conv), same weights."""
    fuse_blocks(monkeypatch, stem=True)
    for alpha, shape in ((1.0, (97, 130)), (0.35, (33, 47))):
        f32 = MobileNetV2(shape + (3,), alpha=alpha, weights=None, classifier_activation=None)
        f64 = MobileNetV2(shape + (3,), alpha=alpha, weights=None, classifier_activation=None, dtype="float64")
        f64.set_weights(f32.get_weights())
        x = np.random.default_rng(3).uniform(-1, 1, (2,) + shape + (3,)).astype(np.float32)
        got, want = f32.predict(x), f64.predict(x.astype(np.float64))
        assert stem_fused(f32)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


@pytest.mark.parametrize("isa", ["scalar", "avx512"])
def test_segmentation_model_fuses_its_stem_with_the_same_bits(monkeypatch, isa):
    """DeepLabV3 (transformers' MobileNetV2 at output stride 8) shares the lowering: its stem fused
    into the first block gives the bits of the separate stem."""
    isa_or_skip(isa)
    config = HFConfig(depth_multiplier=0.35, output_stride=8, head="segmentation",
                      id2label={i: str(i) for i in range(5)})
    x = np.random.default_rng(7).uniform(-1, 1, (2, 67, 45, 3)).astype(np.float32)
    with native.use_isa(isa):
        fuse_blocks(monkeypatch, stem=False)
        separate = HFMobileNetV2(config, "float32", threads=1)
        want = separate.predict(x)
        fuse_blocks(monkeypatch, stem=True)
        fused = HFMobileNetV2(config, "float32", threads=1)
        fused.set_weights(separate.get_weights())
        for threads in (1, 3):
            fused.threads = threads
            np.testing.assert_array_equal(fused.predict(x), want)
        assert stem_fused(fused)


def test_rule_fuses_the_stem_only_where_its_output_outgrows_l1(monkeypatch):
    """With a 48 KB L1d and a 1 MB L2 on 16 cores: 1.0_224's stem output (112x112x32 floats, 1.6 MB)
    and 0.35_96's (48x48x16, 147 KB: in L2, not in L1) are fused away with the first block (the
    latter although that block alone, its input inside L2 and 48 rows for 16 cores, is not fused);
    0.35 at 32x32 (16x16x16, 16 KB) stays separate, as does 1.0_224's stem with the rule off.  On
    2 cores 0.35_96's first block alone is fused (147 KB > 2 x 48 KB, 24 rows a core >= 8)."""
    l2 = 1024 * 1024
    monkeypatch.setattr(P.machine, "CORES", 16)
    monkeypatch.setattr(P, "FUSE_SMALL_MIN_BYTES", 2 * 48 * 1024)
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", l2)
    monkeypatch.setattr(P, "BAND_SCRATCH_BYTES", l2 // 2)
    monkeypatch.setattr(P, "FUSE_MAX_WEIGHT_BYTES", l2 // 2)
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", 48 * 1024)

    def first_two(alpha, size):
        model = MobileNetV2((size, size, 3), alpha=alpha, weights=None)
        model.predict(np.zeros((1, size, size, 3), np.float32))
        return first_ops(model)[0]
    fused = (BLOCK, ["Conv1", "expanded_conv_depthwise", "expanded_conv_project"])
    assert first_two(1.0, 224)[0] == fused
    assert first_two(0.35, 96)[0] == fused
    assert first_two(0.35, 32) == [(STEM, None), (1, None)]  # stem, depthwise (MNV2_OP_DWCONV)
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", float("inf"))
    assert first_two(1.0, 224) == [(STEM, None), (BLOCK, ["expanded_conv_depthwise", "expanded_conv_project"])]
    assert first_two(0.35, 96) == [(STEM, None), (1, None)]
    monkeypatch.setattr(P.machine, "CORES", 2)
    assert first_two(0.35, 96) == [(STEM, None), (BLOCK, ["expanded_conv_depthwise", "expanded_conv_project"])]


def test_stem_with_a_second_reader_is_not_fused():
    """A stem output that an op after the first block still reads must reach memory whole."""
    span = (1000, 2000)
    stem = dict(kind=STEM, writes=span, n=1)
    d = dict(reads=[span], n=1, h=100, w_=100, c=32)
    reader = dict(reads=[(1500, 1600)], writes=(5000, 6000))
    overwriter = dict(reads=[(7000, 8000)], writes=(900, 1100))
    assert P._fusable_stem(stem, d, [overwriter, reader]) == (4 * 100 * 100 * 32 > P.STEM_FUSE_MIN_BYTES)
    assert not P._fusable_stem(stem, d, [reader, overwriter])
    assert not P._fusable_stem(stem, dict(d, reads=[(3000, 4000)]), [])  # not the stem's output


def test_profile_names_the_fused_stem_and_counts_its_macs(monkeypatch):
    fuse_blocks(monkeypatch, stem=True)
    model = MobileNetV2((64, 57, 3), alpha=0.5, weights=None, threads=2)
    rows = model.profile(np.random.default_rng(0).uniform(-1, 1, (2, 64, 57, 3)).astype(np.float32), runs=2)
    first = rows[0]
    assert first["kind"] == "block" and first["layer"] == "expanded_conv_project"
    assert first["fused"] == ["Conv1", "expanded_conv_depthwise", "expanded_conv_project"]
    assert first["shape"].startswith("64x57x3/s2->32x29x16")
    assert sum(r["macs"] for r in rows) == 2 * sum(arch.layer_macs(model.layers, (64, 57, 3)).values())


@pytest.mark.parametrize("stem", [True, False], ids=["stem fused", "stem op"])
@pytest.mark.parametrize("shape", [(32, 32), (33, 35)])  # even and odd: both TF-SAME paddings
def test_the_stem_finds_a_nan_or_inf_in_every_row_on_any_thread_count(monkeypatch, stem, shape):
    """The C plan checks its input for NaN and inf in the stem, row by row as it reads it (no pass
    of its own): a bad value in any row of any image, first and last column, each kind, on 1-3
    threads and batches of 1 and 3 (whole images per thread with 3 on 3), is found and raises, the
    model then runs a clean input as before, and no input check runs outside the run."""
    fuse_blocks(monkeypatch, stem)
    model = MobileNetV2(shape + (3,), alpha=0.35, weights=None, include_top=False, threads=1)
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        x = rng.uniform(-1, 1, (batch,) + shape + (3,)).astype(np.float32)
        want = model(x)
        plan = model._plans[x.shape]
        assert stem_fused(model) == stem and not plan._precheck
        for threads in (1, 2, 3):
            model.threads = threads
            for row in range(shape[0]):
                bad = x.copy()
                bad[(row * 7) % batch, row, (0, shape[1] - 1)[row % 2], row % 3] = (np.nan, np.inf, -np.inf)[row % 3]
                with pytest.raises(ValueError, match="NaN or inf"):
                    model(bad)
            np.testing.assert_array_equal(model(x), want)


def test_an_input_the_stem_does_not_wholly_read_is_checked_before_the_run(monkeypatch):
    """The rule: a fused stem checks the image only where its block's depthwise conv reads every
    stem row (a stride-2 block with "valid" rows over 16 stem rows reads rows 0-14: not), and
    only stems check.  Where no op checks, the plan checks the whole input before the run: a
    NaN in the image's last row still raises, and a clean input gives the same bits."""
    fuse_blocks(monkeypatch, True)
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False, threads=1)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    want = model(x)
    op = dict(model._plans[x.shape].ops[0])
    assert P._checks_its_input(op) and op["h"] == 16
    assert P._checks_its_input(dict(op, stride=2, oh=8, pad_top=0))  # SAME: rows 14, 15 (, pad)
    assert not P._checks_its_input(dict(op, stride=2, oh=7, pad_top=0))  # valid: row 15 unread
    assert not P._checks_its_input(dict(op, kind=native.lib.MNV2_OP_POINTWISE))
    monkeypatch.setattr(P, "_checks_its_input", lambda op: False)
    model.clear_cache()
    for threads in (1, 2):
        model.threads = threads
        bad = x.copy()
        bad[0, 31, 31, 2] = np.nan
        with pytest.raises(ValueError, match="NaN or inf"):
            model(bad)
        assert model._plans[x.shape]._precheck
        np.testing.assert_array_equal(model(x), want)
