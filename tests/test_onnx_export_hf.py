"""ONNX export of transformers' models (dilated convolutions, the DeepLabV3 head), run by ONNX
Runtime against the float64 engine."""
import numpy as np
import pytest

from mobilenetv2 import export_onnx
from mobilenetv2.hf import HFMobileNetV2
from mobilenetv2.formats.hf_config import HFConfig

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("head, size, tf_padding", [("segmentation", (64, 48), True),
                                                     ("segmentation", (65, 49), False),
                                                     ("classification", (96, 96), False)])
def test_onnx_export_of_hf_models(tmp_path, head, size, tf_padding):
    config = HFConfig(depth_multiplier=0.35, output_stride=8 if head == "segmentation" else 32,
                      tf_padding=tf_padding, head=head, id2label={i: str(i) for i in range(7)})
    model = HFMobileNetV2(config)
    golden = HFMobileNetV2(config, dtype="float64")
    rng = np.random.default_rng(0)
    weights = [w * rng.uniform(0.5, 1.5, w.shape) if w.ndim > 1 else w for w in model.get_weights()]
    model.set_weights(weights)
    golden.set_weights(weights)
    path = export_onnx(model, tmp_path / "m.onnx", batch=2, input_size=size)
    x = rng.uniform(-1, 1, (2,) + size + (3,)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    want = golden.predict(x.astype(np.float64))
    assert got.shape == want.shape
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(model, tmp_path / "n.onnx")
    if head == "segmentation":  # its Resize has the output's whole size: a fixed batch (README)
        with pytest.raises(ValueError, match="fixed batch size"):
            export_onnx(model, tmp_path / "n.onnx", batch=None, input_size=size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
