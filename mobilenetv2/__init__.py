"""mobilenetv2: a dependency-light MobileNetV2 inference engine with Keras's names and numerics."""
from mobilenetv2.imagenet import decode_predictions
from mobilenetv2.model import MobileNetV2
from mobilenetv2.native import EngineUnavailable, backend
from mobilenetv2.onnx_export import export_onnx
from mobilenetv2.preprocessing import load_image, preprocess_input

__all__ = ["EngineUnavailable", "MobileNetV2", "backend", "decode_predictions", "export_onnx", "load_image", "preprocess_input"]
__version__ = "0.1.0"
