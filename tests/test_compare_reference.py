"""compare's float64 reference by hand: how two patches combine (``Patch.__add__``), the floors of a
patch that rounds activations (``Reference.floors``: a rounding step of s at a layer puts its
floor at s / ||reference|| at least, and at s in max abs, with no division where the layer is all
zeros), and which convolution a layer's unit is (``Reference.unit_of``), against Keras's layer
names."""
import numpy as np
import pytest

from mobilenetv2 import MobileNetV2
from mobilenetv2.tools.compare.metrics import noise_floor
from mobilenetv2.tools.compare.reference import Patch, Reference, clone

# the code under test runs the same with or without the C extension: .ci/no-ext leaves it out
pytestmark = pytest.mark.engine_independent

SHAPE = (32, 32, 3)


def _models(zero=False):
    """A 0.35 model at 32x32, float64 and float32, with lively weights or (``zero``) every weight 0
    but the batch norms' variances (1): then every layer's output is exactly 0."""
    rng = np.random.default_rng(5)
    out = []
    for dtype in ("float64", "float32"):
        m = MobileNetV2(SHAPE, alpha=0.35, weights=None, classifier_activation=None, dtype=dtype)
        out.append(m)
    for layer in out[0].weighted_layers():
        shapes = layer.weight_shapes()
        if zero:
            ws = [np.ones(s) if n == "moving_variance" else np.zeros(s) for n, s in zip(layer.weight_names, shapes)]
        else:
            ws = [rng.uniform(0.5, 1.5, s) if n in ("gamma", "moving_variance") else rng.normal(0, 0.3, s)
                  for n, s in zip(layer.weight_names, shapes)]
        for m in out:
            m.get_layer(layer.name).set_weights(ws, m.dtype)
    return out


def test_patches_add_their_steps_layers_rounding_and_input_maps_in_order():
    assert (Patch("a", "a") + Patch("b", "b")).steps is None
    assert (Patch("a", "a") + Patch("b", "b", steps={"x": 2.0})).steps == {"x": 2.0}
    assert (Patch("a", "a", steps={"x": 1.0}) + Patch("b", "b")).steps == {"x": 1.0}
    both = Patch("a", "a", steps={"x": 1.0, "y": 1.0}) + Patch("b", "b", steps={"x": 3.0, "z": 4.0})
    assert both.steps == {"x": 3.0, "y": 1.0, "z": 4.0}  # the later patch's step where both round
    assert both.cause == "a" and both.text == "a; b"
    trail = []
    first = Patch("a", "a", layers={"L": lambda layer: layer + ["a"]}, post={"L": lambda v: v * 2},
                  input_fn=lambda x: x + 1, detail={"k": 1})
    second = Patch("b", "b", layers={"L": lambda layer: layer + ["b"], "M": lambda layer: trail},
                   post={"L": lambda v: v + 3}, input_fn=lambda x: x * 10, detail={"k": 2, "j": 3})
    s = first + second
    assert s.layers["L"]([]) == ["a", "b"] and s.layers["M"](None) is trail
    assert s.post["L"](1) == 5            # first's rounding, then second's: (1 * 2) + 3
    assert s.input_fn(1) == 20            # first's input map, then second's: (1 + 1) * 10
    assert s.detail == {"k": 2, "j": 3}
    # OTHER rounds its input (precision) right before its first conv: after the other patch's map
    rounding = Patch("precision", "p", input_fn=lambda x: x + 1)
    assert (rounding + Patch("b", "b", input_fn=lambda x: x * 10)).input_fn(1) == 11  # 1 * 10 + 1


def test_floors_of_a_rounding_patch_by_hand():
    m64, m32 = _models()
    x = np.random.default_rng(2).uniform(-1, 1, (1,) + SHAPE)
    ref = Reference(m64, m32, x)
    assert ref.floors(Patch("b", "b")) is None  # no rounding: the float32 floors hold
    step = 0.25
    floors = ref.floors(Patch("precision", "p", steps={"Conv1": step}))
    assert set(floors) == {layer.name for layer in m64.layers[1:]}  # every layer but the input
    t64 = ref.trace()
    t32 = {}
    y = x.astype(np.float32)
    for layer in m32.layers[1:]:  # our float32 engine layer by layer, as the floor's other side
        y = t32[layer.name] = layer(*[t32.get(i, y if i == m32.layers[0].name else None) for i in layer.inputs])
    norm = np.sqrt(np.sum(t64["Conv1"] ** 2))
    rel, mx = noise_floor(t32["Conv1"], t64["Conv1"])
    assert floors["Conv1"] == pytest.approx((max(rel, step / norm), max(mx, step)), rel=1e-12)
    assert floors["Conv1"][1] == step and floors["Conv1"][0] >= step / norm
    assert floors["bn_Conv1"] == pytest.approx(noise_floor(t32["bn_Conv1"], t64["bn_Conv1"]), rel=1e-12)
    assert set(ref.floors(Patch("p", "p", steps={}), names=("Conv1", "out_relu"))) == {"Conv1", "out_relu"}


def test_floors_where_the_layer_is_all_zeros():
    m64, m32 = _models(zero=True)
    ref = Reference(m64, m32, np.random.default_rng(2).uniform(-1, 1, (1,) + SHAPE))
    assert not ref.trace()["Conv1"].any()
    rel, mx = ref.floors(Patch("precision", "p", steps={"Conv1": 0.5}))["Conv1"]
    assert mx == 0.5 and rel == noise_floor(np.zeros(1), np.zeros(1))[0]  # no step / 0


def test_a_layer_missing_from_other_is_suspected_only_between_the_layers_compared():
    """OTHER lacks two layers; a divergence first seen at block_6_expand after block_3_project_BN
    agreed can only be the missing block_5_add (one patch per input it could stand for), not
    block_2_add, which lies before the agreeing layer."""
    from mobilenetv2.tools.compare.diagnose import _missing_layer
    m64, m32 = _models()
    ref = Reference(m64, m32, np.zeros((1,) + SHAPE))
    ref.unmapped = [{"layer": "block_2_add", "why": "no Add"}, {"layer": "block_5_add", "why": "no Add"}]
    found = _missing_layer(ref, "block_6_expand", "block_3_project_BN")
    assert [(p.detail["layer"], p.detail["kept_input"]) for p in found] == [
        ("block_5_add", "block_5_project_BN"), ("block_5_add", "block_4_add")]
    assert [p.detail["layer"] for p in _missing_layer(ref, "block_3_expand", None)] == ["block_2_add"] * 2


def test_fitted_range_ends_are_shown_as_the_round_numbers_they_are():
    """An end within 0.1 % of the range's width of 0, a whole number or two decimals reads as that."""
    from mobilenetv2.tools.compare.diagnose import _clean
    assert _clean(1.7e-06, 255.0) == 0.0 and str(_clean(-1.7e-06, 255.0)) == "0.0"
    assert _clean(127.50004, 255.0) == 127.5 and _clean(254.5, 255.0) == 254.5 and _clean(254.9, 255.0) == 255.0
    assert _clean(0.4999, 1.0) == 0.5 and _clean(-0.99995, 2.0) == -1.0
    assert _clean(0.123456, 0.01) == 0.123456  # a narrow range: the value as it is


def test_unit_of_a_layer_is_its_convolution():
    m64, m32 = _models()
    ref = Reference(m64, m32, np.zeros((1,) + SHAPE))
    unit = {name: ref.unit_of(name).name for name in ("Conv1", "bn_Conv1", "Conv1_relu", "block_1_pad",
                                                       "block_2_project_BN", "block_2_add", "block_16_project",
                                                       "out_relu", "global_average_pooling2d", "predictions")}
    assert unit == {"Conv1": "Conv1", "bn_Conv1": "Conv1", "Conv1_relu": "Conv1",
                    "block_1_pad": "block_1_expand",         # a pad belongs to the unit before it
                    "block_2_project_BN": "block_2_project",
                    "block_2_add": "block_2_project",        # the residual's own branch, not the skip
                    "block_16_project": "block_16_project", "out_relu": "Conv_1",
                    "global_average_pooling2d": "global_average_pooling2d", "predictions": "predictions"}
    assert ref.unit_of(m64.layers[0].name) is m64.layers[0]
    pad = ref.layers[ref.index["block_1_pad"]]
    assert clone(pad, name="copy").name == "copy" and pad.name == "block_1_pad"  # the model's layer untouched


def test_symmetric_pads_before_a_layer_are_suspected_where_a_stride_2_conv_shows_first():
    """``_padding_unseen``: symmetric pads on the stride-2 3x3 convs OTHER ran between the last
    agreeing layer and this one (where some were), and on every stride-2 3x3 conv; none once every
    stride-2 conv up to this layer was compared and agreed.  By hand, on Keras's layer order."""
    from mobilenetv2.tools.compare.diagnose import _padding_unseen
    m64, m32 = _models()
    ref = Reference(m64, m32, np.zeros((1,) + SHAPE))

    def suspects(layer, previous):
        return [p.detail["layers"] for p in _padding_unseen(ref, layer, previous)]

    assert suspects("Conv1", None) == ["all stride-2"]             # the stem is the first thing seen
    assert suspects("bn_Conv1", None) == [["Conv1"], "all stride-2"]  # the stem ran unseen before it
    assert suspects("bn_Conv1", "Conv1") == []                     # the stem compared and agreed
    assert suspects("block_1_project_BN", "expanded_conv_project_BN") == [["block_1_depthwise"], "all stride-2"]
    assert suspects("block_1_depthwise", "block_1_pad") == ["all stride-2"]  # itself the stride-2 conv
    assert suspects("block_2_add", "block_1_project_BN") == []     # no stride-2 conv in between


def test_to_nhwc_reads_a_pooled_tensor_in_either_layout_against_a_flat_reference():
    """By hand: a global pool's (N, C, 1, 1) (ONNX, torch) or (N, 1, 1, C) (TFLite) output against
    Keras's (N, C) is the (N, C) of its values; a single image without its batch axis gains one."""
    from mobilenetv2.tools.compare.mapping import to_nhwc
    flat = np.arange(10.0).reshape(2, 5)
    for array in (flat.reshape(2, 5, 1, 1), flat.reshape(2, 1, 1, 5)):
        got, _ = to_nhwc(array, (2, 5), "NCHW")
        assert got.shape == (2, 5) and np.array_equal(got, flat)
    got, how = to_nhwc(flat[0], (1, 5), "NHWC")
    assert np.array_equal(got, flat[:1]) and how == "as is"


def test_to_nhwc_follows_the_layout_said_where_both_fit_and_the_shape_where_one_does():
    """By hand, against a (1, 2, 3, 4) NHWC reference: an NCHW (1, 4, 2, 3) array is transposed
    whatever layout OTHER declares (or none), an NHWC one kept; a (1, 3, 3, 3) array fits both and
    is read as declared; one that fits neither is read as declared (NHWC where none is), so the
    shape mismatch shows against the reference."""
    from mobilenetv2.tools.compare.mapping import to_nhwc
    nhwc = np.arange(24.0).reshape(1, 2, 3, 4)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
    for layout in (None, "NHWC", "NCHW"):
        got, how = to_nhwc(nchw, nhwc.shape, layout)
        assert how == "NCHW" and np.array_equal(got, nhwc), layout
        got, how = to_nhwc(nhwc, nhwc.shape, layout)
        assert how == "NHWC" and np.array_equal(got, nhwc), layout
    cube = np.arange(27.0).reshape(1, 3, 3, 3)
    assert to_nhwc(cube, (1, 3, 3, 3), "NHWC")[1] == "NHWC"
    got, how = to_nhwc(cube, (1, 3, 3, 3), "NCHW")
    assert how == "NCHW" and np.array_equal(got, cube.transpose(0, 2, 3, 1))
    odd = np.zeros((1, 5, 6, 7))
    assert to_nhwc(odd, nhwc.shape, "NCHW")[0].shape == (1, 6, 7, 5)
    got, how = to_nhwc(odd, nhwc.shape, None)
    assert how == "NHWC" and got is odd
