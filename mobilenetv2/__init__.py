"""mobilenetv2: a dependency-light MobileNetV2 inference engine with Keras's names and numerics."""
from mobilenetv2.errors import (ArgumentError, DownloadError, Error, ImageError, InsufficientMemory,
                                OutputPathError, WeightsError)
from mobilenetv2.files import NotRegularFile
from mobilenetv2.hf import CheckpointError, from_pretrained, save_pretrained
from mobilenetv2.formats.hf_config import ConfigError
from mobilenetv2.processing.hf_processing import hf_preprocess, post_process_semantic_segmentation
from mobilenetv2.processing.imagenet import decode_predictions
from mobilenetv2.model import MobileNetV2
from mobilenetv2.engines.native import EngineUnavailable, backend, hide_avx512
from mobilenetv2.tools.onnx_export import export_onnx
from mobilenetv2.tools.tflite_export import export_tflite
from mobilenetv2.engines.pool import ThreadsError
from mobilenetv2.processing.preprocessing import load_image, preprocess_input
from mobilenetv2.formats.safetensors import SafetensorsError
from mobilenetv2.tools.compare import compare
from mobilenetv2.tools.compare.errors import CompareError

__all__ = ["ArgumentError", "CheckpointError", "CompareError", "ConfigError", "DownloadError",
           "EngineUnavailable", "Error", "ImageError", "InsufficientMemory", "NotRegularFile", "OutputPathError",
           "SafetensorsError", "ThreadsError", "WeightsError", "MobileNetV2", "backend", "compare", "decode_predictions",
           "export_onnx", "export_tflite", "hide_avx512",
           "from_pretrained", "hf_preprocess", "load_image", "post_process_semantic_segmentation",
           "preprocess_input", "save_pretrained"]
__version__ = "0.1.0"
