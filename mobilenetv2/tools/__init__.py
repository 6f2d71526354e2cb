"""Tools built on the model: comparing another framework's MobileNetV2 with ours (compare/),
timing it against peers (benchmark, benchmark_segmentation) and exporting it for them
(onnx_export, tflite_export)."""
