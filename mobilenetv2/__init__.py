"""mobilenetv2: a dependency-light MobileNetV2 inference engine with Keras's names and numerics."""
from mobilenetv2.model import MobileNetV2
from mobilenetv2.native import backend

__all__ = ["MobileNetV2", "backend"]
__version__ = "0.1.0"
