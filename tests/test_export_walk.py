"""Defects found walking the ONNX and TFLite exporters as a hostile user, each checked against an
independent truth: ONNX Runtime running the file against the float64 engine (the layers' own
NumPy forward in float64), and what export_tflite writes for the same graph."""
import numpy as np
import pytest

from mobilenetv2 import MobileNetV2, export_onnx, export_tflite
from mobilenetv2.network import layers as L

onnx = pytest.importorskip("onnx", reason="export_onnx needs the onnx extra")


def rel_l2(a, b):
    return np.linalg.norm(np.float64(a) - b) / np.linalg.norm(np.float64(b))


def test_a_model_named_with_the_empty_string_exports(tmp_path):
    """MobileNetV2(name="") is accepted (as Keras accepts it) and export_tflite writes it, but
    export_onnx failed with onnx's own ValidationError ("Field 'name' of 'graph' is required to
    be non-empty"), a traceback from a third-party package instead of a file: the graph gets a
    name of its own where the model has none."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    model = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False, pooling="avg", name="")
    assert model.name == ""
    path = export_onnx(model, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    assert onnx.load(path).graph.name  # non-empty, as onnx requires
    x = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    twin = MobileNetV2((32, 32, 3), alpha=0.35, weights=None, include_top=False, pooling="avg", dtype="float64")
    twin.set_weights(model.get_weights())
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert rel_l2(got, twin.predict(x.astype(np.float64))) <= 1e-5
    assert export_tflite(model, tmp_path / "m.tflite")  # (this one wrote it already)


class _Padded:
    """The exporters' view of a model (its layers in order, input shape, name), as in
    tests/test_tflite_export.py: convolutions whose padding ONNX must write out itself."""
    name = "padded"

    def __init__(self, kind, padding):
        rng = np.random.default_rng(7)
        self.input_shape = (9, 7, 4)
        self.layers = [L.InputLayer("input")]
        if kind == "biased_conv":  # a 3x3 stride-2 convolution with its own bias: no batch norm
            conv = L.Conv2D("conv", ["input"], 4, 5, kernel=3, stride=2, padding=padding, use_bias=True)
            conv.set_weights([rng.uniform(-1, 1, (3, 3, 4, 5)), rng.uniform(-1, 1, 5)], np.float64)
            self.layers.append(conv)
        else:  # a ZeroPadding2D before a depthwise convolution that pads too, then its batch norm
            self.layers.append(L.ZeroPadding2D("pad", ["input"]))
            conv = L.DepthwiseConv2D("dw", ["pad"], 4, stride=2, padding=padding)
            conv.set_weights([rng.uniform(-1, 1, (3, 3, 4, 1))], np.float64)
            bn = L.BatchNormalization("dw_BN", ["dw"], 4)
            bn.set_weights([rng.uniform(0.5, 1.5, 4), rng.uniform(-1, 1, 4), rng.uniform(-1, 1, 4),
                            rng.uniform(0.5, 1.5, 4)], np.float64)
            self.layers += [conv, bn, L.ReLU("dw_relu", ["dw_BN"])]

    def __call__(self, x):
        """The float64 forward of the layers (the NumPy engine's own layer code)."""
        out = {"input": x}
        for layer in self.layers[1:]:
            out[layer.name] = layer(*[out[i] for i in layer.inputs])
        return out[self.layers[-1].name]


@pytest.mark.parametrize("kind,padding", [("biased_conv", "same"), ("biased_conv", "symmetric"),
                                          ("biased_conv", "valid"), ("zero_padding", "same"),
                                          ("zero_padding", "valid")])
def test_onnx_writes_every_convolution_s_own_padding(tmp_path, kind, padding):
    """export_onnx wrote a convolution with its own bias with no padding at all (its 'same' or
    'symmetric' pads dropped: ONNX Runtime's output was 1.5 relative L2 off the float64 forward,
    at the declared shape), and after a ZeroPadding2D it wrote that layer's pads instead of the
    convolution's own rather than both: silent wrong answers where export_tflite, given the same
    layers, sums the two and agrees."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    model = _Padded(kind, padding)
    x = np.random.default_rng(8).uniform(-1, 1, (2, 9, 7, 4))
    want = model(x)
    path = export_onnx(model, tmp_path / "m.onnx", batch=None)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x.astype(np.float32)})
    assert got.shape == want.shape
    assert rel_l2(got, want) <= 1e-5
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is not installed (the litert extra)")
    lite = litert.Interpreter(model_path=str(export_tflite(model, tmp_path / "m.tflite", batch=2)))
    assert rel_l2(lite.get_signature_runner()(input=x.astype(np.float32))["output"], want) <= 1e-5


@pytest.mark.parametrize("export", [export_onnx, export_tflite])
@pytest.mark.parametrize("size", [{96, 64}, {96: 0, 64: 0}], ids=["set", "dict"])
def test_an_unordered_input_size_is_refused(tmp_path, export, size):
    """A set or a dict has no height-then-width order: {96, 64} was taken as whichever order the
    hash gave (a file of 64x96 for a user who meant 96x64), a dict as its keys."""
    from mobilenetv2.errors import ArgumentError
    model = MobileNetV2((None, None, 3), alpha=0.35, weights=None, include_top=False)
    with pytest.raises(ArgumentError, match="input_size must be \\(height, width\\)"):
        export(model, tmp_path / "m.out", input_size=size)
    assert not (tmp_path / "m.out").exists()


def test_a_half_open_model_s_refusal_says_which_side_to_give(tmp_path):
    """A model of input_shape (None, 96, 3) exported at (64, 64) was told to "leave input_size
    out", which it refuses too (its height is open): the message names the side it fixes, and the
    size it points to exports."""
    from mobilenetv2.errors import ArgumentError
    model = MobileNetV2((None, 96, 3), alpha=0.35, weights=None, include_top=False)
    with pytest.raises(ArgumentError, match="give input_size with the width 96") as refused:
        export_onnx(model, tmp_path / "m.onnx", input_size=(64, 64))
    assert "leave input_size out" not in str(refused.value)
    with pytest.raises(ArgumentError, match="input_size"):
        export_onnx(model, tmp_path / "m.onnx")  # leaving it out is no way either
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(64, 96))
    dims = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 64, 96, 3]
