"""The network: the paper's block table and the graph built from it (arch), the layer objects with
Keras's names (layers), and the variants' costs computed from that graph (variants).  Every engine,
exporter and model family (Keras, transformers, DeepLabV3) lowers this one graph."""
