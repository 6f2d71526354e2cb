"""``mobilenetv2.compare``: find the first layer where another framework's MobileNetV2 leaves our
float64 reference by more than rounding, and name the cause with evidence.

One file per job: readers of OTHER (``onnx_reader``, ``tflite_reader``, ``dump_reader``,
``object_reader``) give a ``graph.OtherModel``; ``weights`` builds the float64 reference (user's
weights, or OTHER's, batch norm folded or not); ``mapping`` names OTHER's tensors by Keras layer;
``metrics`` measures each layer against its float32 noise floor; ``diagnose`` confirms causes by
re-running the reference (``reference``) with the defect applied; ``report`` prints and plots.
"""
from mobilenetv2.tools.compare.api import SCHEMA, compare
from mobilenetv2.tools.compare.diagnose import CAUSES
from mobilenetv2.tools.compare.errors import CompareError, MissingExtra

__all__ = ["CAUSES", "CompareError", "MissingExtra", "SCHEMA", "compare"]
