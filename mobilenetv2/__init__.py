"""mobilenetv2: a dependency-light MobileNetV2 inference engine with Keras's names and numerics."""
from mobilenetv2.hf import from_pretrained, save_pretrained
from mobilenetv2.hf_processing import hf_preprocess, post_process_semantic_segmentation
from mobilenetv2.imagenet import decode_predictions
from mobilenetv2.model import MobileNetV2
from mobilenetv2.native import EngineUnavailable, backend
from mobilenetv2.onnx_export import export_onnx
from mobilenetv2.preprocessing import load_image, preprocess_input
from mobilenetv2.tools.compare import compare

__all__ = ["EngineUnavailable", "MobileNetV2", "backend", "compare", "decode_predictions", "export_onnx",
           "from_pretrained", "hf_preprocess", "load_image", "post_process_semantic_segmentation",
           "preprocess_input", "save_pretrained"]
__version__ = "0.1.0"
