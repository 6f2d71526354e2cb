"""The fused inverted-residual block op on dilated blocks (DeepLabV3's output stride 8): fused
against the separate ops bit for bit, on every instruction set, odd sizes, several images and 1 to 4
threads, and against the float64 NumPy engine; and which blocks the plan fuses at 513x513."""
import numpy as np
import pytest

from mobilenetv2.engines import native
from mobilenetv2.engines import plan as P
from mobilenetv2.hf import HFMobileNetV2
from mobilenetv2.formats.hf_config import HFConfig

pytestmark = pytest.mark.skipif(not native.available(), reason="the C extension is not built")

BLOCK = 6  # MNV2_OP_BLOCK


def segmenter(depth_multiplier, dtype="float32"):
    labels = {i: str(i) for i in range(5)}
    return HFMobileNetV2(HFConfig(depth_multiplier=depth_multiplier, output_stride=8, head="segmentation",
                                  id2label=labels), dtype, threads=1)


def fused_blocks(model):
    """(dilation, band) of every fused block op of the model's plans."""
    return [(op["dilation"], op["band"]) for plan in model._plans.values() for op in plan.ops
            if op["kind"] == BLOCK]


def fuse_everything(monkeypatch):
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", 0)
    monkeypatch.setattr(P, "FUSE_MIN_ROWS", 1)
    monkeypatch.setattr(P, "FUSE_MAX_WEIGHT_BYTES", float("inf"))


@pytest.mark.parametrize("isa", native.isas() if native.available() else [])
@pytest.mark.parametrize("depth_multiplier,shape,batch", [
    (0.35, (67, 45), 1), (0.5, (40, 33), 2), (0.35, (33, 35), 1)])
def test_fused_dilated_blocks_give_the_same_bits_as_separate_ops(monkeypatch, isa, depth_multiplier, shape,
                                                                 batch):
    """Every block fused, the dilated ones (d = 2 and 4, stride 1) included, with bands of 1 to 4
    rows, against no block fused: each output is computed by the same operations either way (the
    ring feeds the dilated row kernel the rows the unfused op reads from the whole tensor), so the
    bits must agree whatever the thread count.  Odd sizes leave every band and thread split a
    remainder; 33x35 gives a 5x5 map at stride 8, smaller than the 9-row window of dilation 4."""
    x = np.random.default_rng(7).uniform(-1, 1, (batch,) + shape + (3,)).astype(np.float32)
    with native.use_isa(isa):
        monkeypatch.setattr(P, "FUSE_MIN_BYTES", float("inf"))
        monkeypatch.setattr(P, "FUSE_SMALL_MIN_BYTES", float("inf"))
        monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", float("inf"))  # nor the stem into the first
        separate = segmenter(depth_multiplier)
        want = separate.predict(x)
        assert fused_blocks(separate) == []
        fuse_everything(monkeypatch)
        for band_bytes, max_band in ((10 ** 9, 1), (64 * 1024, 4), (10 ** 9, 2), (10 ** 9, 4)):
            monkeypatch.setattr(P, "BAND_SCRATCH_BYTES", band_bytes)
            monkeypatch.setattr(P, "MAX_BAND", max_band)
            fused = segmenter(depth_multiplier)
            fused.set_weights(separate.get_weights())
            for threads in (1, 2, 3, 4):
                fused.threads = threads
                np.testing.assert_array_equal(fused.predict(x), want, err_msg=f"{isa} {threads} threads")
            blocks = fused_blocks(fused)
            assert [d for d, _ in blocks] == [1] * 7 + [2] * 7 + [4] * 3  # all 17, as the config dilates them
            assert max(band for _, band in blocks) <= max_band


def test_fused_dilated_blocks_match_the_float64_engine(monkeypatch):
    """The fused plan against the NumPy engine in float64 (its own dilated depthwise), same weights."""
    fuse_everything(monkeypatch)
    f32, f64 = segmenter(0.35), segmenter(0.35, "float64")
    f64.set_weights(f32.get_weights())
    x = np.random.default_rng(3).uniform(-1, 1, (1, 71, 66, 3)).astype(np.float32)
    got, want = f32.predict(x), f64.predict(x.astype(np.float64))
    assert any(d == 4 for d, _ in fused_blocks(f32))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


def test_513_plan_fuses_every_block_on_a_1mb_l2_core(monkeypatch):
    """At 513x513 (a 65x65 map at stride 8, expansions of 2-16 MB) with the thresholds a 1 MB-L2
    core derives (Zen 4/5), every block is fused, the dilated ones in bands of MAX_BAND rows (their
    ring of 2 d + 1 wide rows cannot stay in L2 anyway), blocks 14-16 too although their weights
    (1.2-1.8 MB) outgrow L2: re-read per band they still cost less than the expanded rows'
    round trips."""
    l2 = 1024 * 1024
    monkeypatch.setattr(P, "FUSE_MIN_BYTES", l2)
    monkeypatch.setattr(P, "BAND_SCRATCH_BYTES", l2 // 2)
    monkeypatch.setattr(P, "FUSE_MAX_WEIGHT_BYTES", l2 // 2)
    m = segmenter(1.0)
    assert m._plan(m._check_input(np.zeros((1, 513, 513, 3), np.float32))) is not None
    blocks = fused_blocks(m)
    assert [d for d, _ in blocks] == [1] * 7 + [2] * 7 + [4] * 3
    assert all(band == P.MAX_BAND for d, band in blocks if d > 1)
    plan = next(iter(m._plans.values()))
    kinds = {label: op["kind"] for op, label in zip(plan.ops, plan.labels)}
    assert native.lib.MNV2_OP_DWCONV_DILATED not in kinds.values()  # no dilated conv left unfused


def test_weights_pay_only_when_they_cost_less_than_the_traffic_saved():
    dw = dict(ow=65, c=960, stride=1, dilation=4, w_=65)
    band_bytes = 4 * 4 * 65 * 960  # one output row's expanded pixels, four passes
    assert P._weights_pay(P.FUSE_MAX_WEIGHT_BYTES, dw, 1)
    assert P._weights_pay(4 * band_bytes, dw, 4)
    assert not P._weights_pay(max(4 * band_bytes, P.FUSE_MAX_WEIGHT_BYTES) + 4, dw, 4)


def labels(n):
    return {i: str(i) for i in range(n)}


@pytest.mark.parametrize("config,top_pooling,shape,batch", [
    # channel counts off every vector width (depth_divisible_by 1 or 3, expand ratios 1.5 to 3.3),
    # each head and output stride, sizes that leave every stride, band and thread split a remainder
    (dict(depth_multiplier=0.1, depth_divisible_by=1, min_depth=1, expand_ratio=2.5, output_stride=16,
          tf_padding=False, head="segmentation", id2label=labels(3)), "global", (37, 50), 2),
    (dict(depth_multiplier=0.35, depth_divisible_by=3, min_depth=3, expand_ratio=1.5, first_layer_is_expansion=False,
          finegrained_output=False, head="classification", id2label=labels(7)), "7x7", (33, 1030), 1),
    (dict(depth_multiplier=0.2, depth_divisible_by=1, min_depth=5, expand_ratio=3.3, output_stride=8, head=None),
     "global", (65, 34), 3),
])
def test_odd_channel_counts_on_every_isa_and_thread_count(monkeypatch, config, top_pooling, shape, batch):
    """transformers configs whose every layer has a channel count no kernel's vector width divides,
    every block fused in bands of 3 rows (the stem too where the first block has no expansion):
    the float64 engine within float32 rounding, and the same bits on every ISA and thread count."""
    x = np.random.default_rng(5).uniform(-1, 1, (batch,) + shape + (3,)).astype(np.float32)
    fuse_everything(monkeypatch)
    monkeypatch.setattr(P, "MAX_BAND", 3)
    monkeypatch.setattr(P, "STEM_FUSE_MIN_BYTES", 0)
    f32 = HFMobileNetV2(HFConfig(**config), threads=1, top_pooling=top_pooling)
    f64 = HFMobileNetV2(HFConfig(**config), "float64", top_pooling=top_pooling)
    f64.set_weights(f32.get_weights())
    got, want = f32.predict(x), f64.predict(x.astype(np.float64))
    assert fused_blocks(f32) and got.shape == want.shape
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5
    for isa in native.isas():
        for threads in (1, 3, 17):
            f32.threads = threads
            with native.use_isa(isa):
                np.testing.assert_array_equal(f32.predict(x), got, err_msg=f"{isa} {threads} threads")
