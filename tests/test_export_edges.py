"""Edges of the ONNX and TFLite exports met by a user deploying the files with ONNX Runtime,
OpenVINO and LiteRT: what each runtime reports of the file (names, dynamic axes, signatures), and
its outputs against the float64 engine."""
import os
import types

import numpy as np
import pytest

from mobilenetv2 import ArgumentError, MobileNetV2, export_onnx, export_tflite

from conftest import require_shared


def rel_l2(a, b):
    return np.linalg.norm(np.float64(a) - b) / np.linalg.norm(np.float64(b))


def float64_twin(model, shape, **kw):
    twin = MobileNetV2(shape, alpha=model.alpha, weights=None, dtype="float64", **kw)
    twin.set_weights(model.get_weights())
    return twin


def test_a_dynamic_batch_is_one_named_axis_of_the_input_and_the_output(tmp_path):
    """batch=None wrote the batch axis with neither a value nor a name: ONNX Runtime reported it as
    None on the input and the output alike (two unrelated unknowns; onnx's shape inference calls
    the output's 'unk__0'), and a deployment could not fix it by name
    (SessionOptions.add_free_dimension_override_by_name, as for torch.onnx's files)."""
    pytest.importorskip("onnx", reason="export_onnx needs the onnx extra")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    kw = dict(include_top=False, pooling="avg")
    model = MobileNetV2((33, 47, 3), alpha=0.35, weights=None, **kw)
    path = export_onnx(model, tmp_path / "m.onnx", batch=None)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (i,), (o,) = session.get_inputs(), session.get_outputs()
    assert (i.name, i.shape) == ("input", ["batch", 33, 47, 3])
    assert (o.name, o.shape) == ("output", ["batch", 1280])
    options = ort.SessionOptions()
    options.add_free_dimension_override_by_name("batch", 3)
    fixed = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    assert fixed.get_inputs()[0].shape == [3, 33, 47, 3]
    x = np.random.default_rng(0).uniform(-1, 1, (3, 33, 47, 3)).astype(np.float32)
    (got,) = fixed.run(None, {"input": x})
    assert rel_l2(got, float64_twin(model, (33, 47, 3), **kw).predict(x.astype(np.float64))) <= 1e-5
    fixed_batch = export_onnx(model, tmp_path / "b2.onnx", batch=2)  # a fixed batch: numbers, no name
    assert ort.InferenceSession(fixed_batch, providers=["CPUExecutionProvider"]).get_outputs()[0].shape == [2, 1280]


def test_the_tflite_file_has_the_signature_tensorflow_s_converter_writes(tmp_path):
    """TensorFlow's converter's files (../shared/peers) carry one SignatureDef, 'serving_default';
    ours had none, so LiteRT's signature runner refused it ('model has 0 Signatures') and
    ai-edge-quantizer could not calibrate it for int8 ('Invalid signature_key')."""
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT is not installed (the litert extra)")
    Interpreter = litert.Interpreter
    theirs = require_shared("peers", "mobilenet_v2_0.35_96_synthetic.tflite")
    assert list(Interpreter(model_path=str(theirs)).get_signature_list()) == ["serving_default"]
    model = MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=7)
    path = export_tflite(model, tmp_path / "m.tflite")
    it = Interpreter(model_path=str(path))
    assert it.get_signature_list() == {"serving_default": {"inputs": ["input"], "outputs": ["output"]}}
    x = np.random.default_rng(1).uniform(-1, 1, (3, 96, 96, 3)).astype(np.float32)  # the runner resizes the batch
    got = it.get_signature_runner()(input=x)["output"]
    assert got.shape == (3, 7)
    assert rel_l2(got, float64_twin(model, (96, 96, 3), classes=7).predict(x.astype(np.float64))) <= 5e-5
    aeq = pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    q = aeq.quantizer.Quantizer(str(path))
    q.load_quantization_recipe(aeq.recipe.static_wi8_ai8())
    q.quantize(q.calibrate({"serving_default": [{"input": x[:1]}]})).export_model(str(tmp_path / "q.tflite"))
    assert os.path.getsize(tmp_path / "q.tflite") < os.path.getsize(path) / 2  # int8 weights


@pytest.mark.parametrize("export", [export_onnx, export_tflite])
def test_a_network_without_weights_is_refused_by_name(tmp_path, export):
    """Layers built without weights (the exporters' view of a model, as in the 2 GiB test) failed
    with IndexError('tuple index out of range') half way through: refused, naming the layer."""
    from mobilenetv2.network import arch
    if export is export_onnx:
        pytest.importorskip("onnx", reason="export_onnx needs the onnx extra")
    bare = types.SimpleNamespace(input_shape=(32, 32, 3), layers=arch.build_layers(0.35, include_top=False),
                                 name="bare")
    with pytest.raises(ArgumentError, match=rf"^{export.__name__}: layer 'Conv1' has no weights \(it takes kernel\)"):
        export(bare, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shape,alpha,kw", [((33, 47, 3), 0.35, dict(top_pooling="7x7", classes=5)),
                                            ((32, 32, 3), 1.4, dict(include_top=False, pooling="max"))])
def test_openvino_runs_both_exports_as_the_float64_engine(tmp_path, shape, alpha, kw):
    """OpenVINO reads the ONNX file (a dynamic batch) and the .tflite one; in f32 (its CPU plugin's
    default on a bfloat16 CPU is bf16, 1e-2 off) both give the float64 engine's values."""
    pytest.importorskip("onnx", reason="export_onnx needs the onnx extra")
    ov = pytest.importorskip("openvino", reason="openvino is not installed (a benchmark peer)")
    model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
    x = np.random.default_rng(2).uniform(-1, 1, (2,) + shape).astype(np.float32)
    want = float64_twin(model, shape, **kw).predict(x.astype(np.float64))
    core = ov.Core()
    for path in (export_onnx(model, tmp_path / "m.onnx", batch=None), export_tflite(model, tmp_path / "m.tflite", batch=2)):
        compiled = core.compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled(x)[0]
        assert got.shape == want.shape, path
        assert rel_l2(got, want) <= 1e-5, path
