"""The ONNX export computes what the model computes (checked with onnx's reference evaluator,
and ONNX Runtime where installed)."""
import numpy as np
import pytest

from mobilenetv2 import MobileNetV2, export_onnx

onnx = pytest.importorskip("onnx", reason="onnx is an optional extra (pip install 'mobilenetv2[onnx]')")


def rel_l2(a, b):
    return np.linalg.norm(np.float64(a) - b) / np.linalg.norm(np.float64(b))


CASES = [
    ((96, 96, 3), 0.35, dict()),
    ((96, 96, 3), 0.35, dict(classifier_activation=None)),
    ((97, 113, 3), 0.5, dict(include_top=False, pooling="avg")),
    ((97, 113, 3), 0.35, dict(include_top=False, pooling="max")),
    ((33, 40, 3), 0.35, dict(include_top=False)),
]


@pytest.mark.parametrize("shape,alpha,kw", CASES)
def test_reference_evaluator(tmp_path, shape, alpha, kw):
    from onnx.reference import ReferenceEvaluator
    model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
    x = np.random.default_rng(0).uniform(-1, 1, (1,) + shape).astype(np.float32)
    path = export_onnx(model, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(path))
    (got,) = ReferenceEvaluator(path).run(None, {"input": x})
    want = model.predict(x)
    assert got.shape == want.shape
    assert rel_l2(got, want) <= 1e-5


@pytest.mark.parametrize("shape,alpha,kw", CASES)
def test_onnxruntime(tmp_path, shape, alpha, kw):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    model = MobileNetV2(shape, alpha=alpha, weights=None, **kw)
    x = np.random.default_rng(1).uniform(-1, 1, (2,) + shape).astype(np.float32)
    path = export_onnx(model, tmp_path / "m.onnx", batch=None)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert rel_l2(got, model.predict(x)) <= 1e-5


def test_needs_a_static_shape(tmp_path):
    with pytest.raises(ValueError, match="static"):
        export_onnx(MobileNetV2(None, alpha=0.35, include_top=False, weights=None), tmp_path / "m.onnx")


# The IR version each opset first shipped with, from onnx's release table (onnx.helper.VERSION_TABLE):
# written out here so the test does not check the exporter against the function the exporter calls.
IR_FOR_OPSET = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


@pytest.mark.parametrize("opset", sorted(IR_FOR_OPSET))
def test_ir_version_goes_with_the_opset(tmp_path, opset):
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    path = export_onnx(model, tmp_path / "m.onnx", opset=opset)
    m = onnx.load(path)
    assert m.ir_version == IR_FOR_OPSET[opset]
    assert [(o.domain, o.version) for o in m.opset_import] == [("", opset)]
    # the table itself: the first onnx release carrying this opset wrote this IR version
    first = min((row for row in onnx.helper.VERSION_TABLE if row[2] >= opset), key=lambda r: r[2])
    assert first[1] == IR_FOR_OPSET[opset]
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (a benchmark peer)")
    x = np.random.default_rng(opset).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert rel_l2(got, model.predict(x)) <= 1e-5


@pytest.mark.parametrize("opset", [12, 22, "13", True])
def test_opset_out_of_range(tmp_path, opset):
    model = MobileNetV2((32, 32, 3), alpha=0.35, include_top=False, weights=None)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "m.onnx", opset=opset)
