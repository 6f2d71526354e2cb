"""The MobileNetV2 weights registry (registry.json), installed as mobilenetv2._registry."""
