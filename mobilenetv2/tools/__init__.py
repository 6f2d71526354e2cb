"""Tools built on the network: comparing another framework's MobileNetV2 with ours (compare/)."""
