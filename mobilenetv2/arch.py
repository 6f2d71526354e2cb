"""MobileNetV2 as Keras builds it: a stem, the paper's table of inverted-residual blocks, a head.

``build_layers`` returns the layer list of ``keras.applications.MobileNetV2`` with the same names,
order and channel counts, for any width multiplier ``alpha``.
"""
from mobilenetv2 import layers as L

# The paper's Table 2: expansion t, output channels c, repeats n, first stride s.
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_FILTERS = 32
LAST_FILTERS = 1280


def make_divisible(v, divisor=8, min_value=None):
    """Keras's ``_make_divisible``: round to a multiple of ``divisor``, never below 90 % of v."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def block_specs(alpha):
    """(block_id, expansion, output channels, stride) of the 17 inverted-residual blocks."""
    specs = []
    for t, c, n, s in BLOCKS:
        for i in range(n):
            specs.append((len(specs), t, make_divisible(int(c * alpha), 8), s if i == 0 else 1))
    return specs


def last_filters(alpha):
    return make_divisible(LAST_FILTERS * alpha, 8) if alpha > 1.0 else LAST_FILTERS


def _inverted_res_block(layers, x, cin, block_id, expansion, cout, stride):
    """Append one block's layers after layer ``x``; return (last layer name, channels)."""
    def add(layer):
        layers.append(layer)
        return layer.name

    inputs = x
    if block_id:
        prefix = f"block_{block_id}_"
        hidden = expansion * cin
        x = add(L.Conv2D(prefix + "expand", [x], cin, hidden, kernel=1))
        x = add(L.BatchNormalization(prefix + "expand_BN", [x], hidden))
        x = add(L.ReLU(prefix + "expand_relu", [x]))
    else:
        prefix = "expanded_conv_"
        hidden = cin
    if stride == 2:
        x = add(L.ZeroPadding2D(prefix + "pad", [x]))
    x = add(L.DepthwiseConv2D(prefix + "depthwise", [x], hidden, stride,
                              padding="same" if stride == 1 else "valid"))
    x = add(L.BatchNormalization(prefix + "depthwise_BN", [x], hidden))
    x = add(L.ReLU(prefix + "depthwise_relu", [x]))
    x = add(L.Conv2D(prefix + "project", [x], hidden, cout, kernel=1))
    x = add(L.BatchNormalization(prefix + "project_BN", [x], cout))
    if cin == cout and stride == 1:
        x = add(L.Add(prefix + "add", [inputs, x]))
    return x, cout


def build_layers(alpha=1.0, include_top=True, pooling=None, classes=1000,
                 classifier_activation="softmax"):
    """The layer list of Keras's MobileNetV2, input layer first, in Keras's order."""
    layers = [L.InputLayer("input_layer")]
    c = make_divisible(STEM_FILTERS * alpha, 8)
    layers += [L.Conv2D("Conv1", ["input_layer"], 3, c, kernel=3, stride=2, padding="same"),
               L.BatchNormalization("bn_Conv1", ["Conv1"], c),
               L.ReLU("Conv1_relu", ["bn_Conv1"])]
    x = "Conv1_relu"
    for block_id, t, cout, s in block_specs(alpha):
        x, c = _inverted_res_block(layers, x, c, block_id, t, cout, s)
    last = last_filters(alpha)
    layers += [L.Conv2D("Conv_1", [x], c, last, kernel=1),
               L.BatchNormalization("Conv_1_bn", ["Conv_1"], last),
               L.ReLU("out_relu", ["Conv_1_bn"])]
    if include_top:
        layers += [L.GlobalAveragePooling2D("global_average_pooling2d", ["out_relu"]),
                   L.Dense("predictions", ["global_average_pooling2d"], last, classes,
                           activation=classifier_activation)]
    elif pooling == "avg":
        layers.append(L.GlobalAveragePooling2D("global_average_pooling2d", ["out_relu"]))
    elif pooling == "max":
        layers.append(L.GlobalMaxPooling2D("global_max_pooling2d", ["out_relu"]))
    return layers


def output_shapes(layers, input_shape):
    """Per-example output shape (H, W, C) of every layer, by name, for one input shape."""
    shapes = {layers[0].name: tuple(input_shape)}
    for layer in layers[1:]:
        shapes[layer.name] = layer.output_shape(*[shapes[i] for i in layer.inputs])
    return shapes


def layer_macs(layers, input_shape):
    """Multiply-accumulates of each layer (convolutions and the dense head), by name."""
    shapes = output_shapes(layers, input_shape)
    return {layer.name: layer.macs(*[shapes[i] for i in layer.inputs]) if layer.inputs else 0
            for layer in layers}
