"""MobileNetV2 as Keras builds it: a stem, the paper's table of inverted-residual blocks, a head.

``build_layers`` returns the layer list of ``keras.applications.MobileNetV2`` with the same names,
order and channel counts, for any width multiplier ``alpha``.  ``build_hf_layers`` lowers a
transformers ``MobileNetV2Config`` (depth multiplier rounding, TF or symmetric padding, output
stride 8 with dilated depthwise convolutions, the 1001-class classifier or the DeepLabV3 head) onto
the same block table and the same ``_inverted_res_block``, with Keras's layer names.
"""
import math
from collections.abc import Mapping, Set as AbstractSet

from mobilenetv2.network import layers as L
from mobilenetv2.errors import ArgumentError, is_items, is_whole
from mobilenetv2.engines.numpy_kernels import fold_batchnorm

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


MIN_SIZE = 32          # input height/width a model takes (Keras's minimum)
MAX_SIZE = 4096        # and at most: at 4096 block_1_expand alone is 2048^2 x 96 = 1.6 GB per image
BN_EPS = 1e-3          # Keras's and TF-slim's batch-norm epsilon (transformers' layer_norm_eps)
DEEPLAB_BN_EPS = 1e-5  # transformers' DeepLabV3 head (hard-coded there)
DEEPLAB_CHANNELS = 256


def make_divisible(v, divisor, min_value=None):
    """Keras's ``_make_divisible``: round to a multiple of ``divisor``, never below 90 % of v (the
    divisor is given, as Keras gives it, by every caller: 8 for Keras, transformers' config's)."""
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


def _inverted_res_block(layers, x, cin, block_id, expansion, cout, stride, dilation=1,
                        tf_padding=True, hidden=None, eps=BN_EPS, residual=True):
    """Append one block's layers after layer ``x``; return (last layer name, channels).

    ``hidden`` (default ``expansion * cin``) is the expanded width; the expand conv is there when
    ``block_id`` is not 0 or the expansion is not 1.  ``tf_padding`` pads the depthwise conv as
    Keras does (TF-SAME, a ZeroPadding2D before a stride-2 one); False pads ``dilation`` zeros on
    every side, as PyTorch's ``padding=dilation``.  ``residual`` False: no Add even where the
    input and output widths match (transformers' stem, its block 0, never adds one)."""
    def add(layer):
        layers.append(layer)
        return layer.name

    inputs = x
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    hidden = expansion * cin if hidden is None else hidden
    if block_id or expansion != 1:
        x = add(L.Conv2D(prefix + "expand", [x], cin, hidden, kernel=1))
        x = add(L.BatchNormalization(prefix + "expand_BN", [x], hidden, eps))
        x = add(L.ReLU(prefix + "expand_relu", [x]))
    if not tf_padding:
        padding = "symmetric"
    elif stride == 2:
        x = add(L.ZeroPadding2D(prefix + "pad", [x]))
        padding = "valid"
    else:
        padding = "same"
    x = add(L.DepthwiseConv2D(prefix + "depthwise", [x], hidden, stride, padding=padding, dilation=dilation))
    x = add(L.BatchNormalization(prefix + "depthwise_BN", [x], hidden, eps))
    x = add(L.ReLU(prefix + "depthwise_relu", [x]))
    x = add(L.Conv2D(prefix + "project", [x], hidden, cout, kernel=1))
    x = add(L.BatchNormalization(prefix + "project_BN", [x], cout, eps))
    if residual and cin == cout and stride == 1:
        x = add(L.Add(prefix + "add", [inputs, x]))
    return x, cout


def _stem(layers, cin, cout, tf_padding=True, eps=BN_EPS):
    """Conv1 (3x3 stride 2), its batch norm and ReLU6; returns the last layer's name."""
    layers += [L.Conv2D("Conv1", ["input_layer"], cin, cout, kernel=3, stride=2,
                        padding="same" if tf_padding else "symmetric"),
               L.BatchNormalization("bn_Conv1", ["Conv1"], cout, eps),
               L.ReLU("Conv1_relu", ["bn_Conv1"])]
    return "Conv1_relu"


def _last_conv(layers, x, cin, cout, eps=BN_EPS):
    layers += [L.Conv2D("Conv_1", [x], cin, cout, kernel=1),
               L.BatchNormalization("Conv_1_bn", ["Conv_1"], cout, eps),
               L.ReLU("out_relu", ["Conv_1_bn"])]
    return "out_relu"


def _classifier(layers, x, cin, classes, activation, pool="global"):
    """The classification head: global average pooling (or TF-slim's 7x7 average pooling, which
    gives a grid of scores on inputs above 224) and the dense layer."""
    if pool == "global":
        layers.append(L.GlobalAveragePooling2D("global_average_pooling2d", [x]))
        x = "global_average_pooling2d"
    else:
        layers.append(L.AveragePooling2D("average_pooling2d", [x], pool=7))
        x = "average_pooling2d"
    layers.append(L.Dense("predictions", [x], cin, classes, activation=activation))
    return "predictions"


def build_layers(alpha=1.0, include_top=True, pooling=None, classes=1000,
                 classifier_activation="softmax", top_pooling="global"):
    """The layer list of Keras's MobileNetV2, input layer first, in Keras's order.

    ``top_pooling='7x7'`` replaces the head's global average by TF-slim's 7x7 average pooling
    (stride 1, VALID): a 224 input gives the same scores, a larger one a grid of them."""
    layers = [L.InputLayer("input_layer")]
    c = make_divisible(STEM_FILTERS * alpha, 8)
    x = _stem(layers, 3, c)
    for block_id, t, cout, s in block_specs(alpha):
        x, c = _inverted_res_block(layers, x, c, block_id, t, cout, s)
    last = last_filters(alpha)
    _last_conv(layers, x, c, last)
    if include_top:
        _classifier(layers, "out_relu", last, classes, classifier_activation, top_pooling)
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


def run_values(layers, input_shape, wanted=None):
    """Values per example a run of ``layers`` holds at least (the memory checks' lower bound): the
    largest layer's inputs and output, and the outputs of the ``wanted`` layer names kept for the
    caller (then only the layers up to the last of them run)."""
    if wanted is not None:
        layers = layers[:max(i for i, layer in enumerate(layers) if layer.name in wanted) + 1]
    size = {name: math.prod(shape) for name, shape in output_shapes(layers, input_shape).items()}
    step = max(sum(size[i] for i in layer.inputs) + size[layer.name] for layer in layers[1:])
    return step + (sum(size[name] for name in wanted) if wanted is not None else 0)


def layer_macs(layers, input_shape):
    """Multiply-accumulates of each layer (convolutions and the dense head), by name."""
    shapes = output_shapes(layers, input_shape)
    return {layer.name: layer.macs(*[shapes[i] for i in layer.inputs]) if layer.inputs else 0
            for layer in layers}


# -- transformers' MobileNetV2Config ---------------------------------------------------------------
def hf_depth(channels, depth_multiplier, divisible_by=8, min_depth=8):
    """transformers' ``apply_depth_multiplier``: make_divisible(round(c * multiplier)).  For the
    official multipliers it gives Keras's widths (which round down before make_divisible; tested)."""
    return make_divisible(int(round(channels * depth_multiplier)), divisible_by, min_depth)


def hf_block_specs(depth_multiplier=1.0, depth_divisible_by=8, min_depth=8, expand_ratio=6.0,
                   output_stride=32):
    """(block_id, expanded width, output channels, stride, dilation) of the 17 blocks of a
    transformers MobileNetV2 (block 0 is its stem's depthwise + project: expanded width = input).

    Once the running stride reaches ``output_stride``, later strides become 1 and multiply the
    dilation of the blocks after them instead (the block that would have strided keeps the
    dilation it had)."""
    def depth(c):
        return hf_depth(c, depth_multiplier, depth_divisible_by, min_depth)

    specs, current, dilation = [], 2, 1  # the stem conv has stride 2
    cin = depth(STEM_FILTERS)
    for t, c, n, s in BLOCKS:
        for i in range(n):
            block_id, stride = len(specs), s if i == 0 else 1
            hidden = cin if block_id == 0 else make_divisible(int(round(cin * expand_ratio)),
                                                              depth_divisible_by, min_depth)
            if block_id and current == output_stride:
                block_dilation, dilation, stride = dilation, dilation * stride, 1
            else:
                block_dilation = 1
                current *= stride
            specs.append((block_id, hidden, depth(c), stride, block_dilation))
            cin = depth(c)
    return specs


def hf_last_filters(depth_multiplier, depth_divisible_by=8, min_depth=8, finegrained_output=True):
    if finegrained_output and depth_multiplier < 1.0:
        return LAST_FILTERS
    return hf_depth(LAST_FILTERS, depth_multiplier, depth_divisible_by, min_depth)


def build_hf_layers(depth_multiplier=1.0, depth_divisible_by=8, min_depth=8, expand_ratio=6.0,
                    output_stride=32, first_layer_is_expansion=True, finegrained_output=True,
                    tf_padding=True, eps=BN_EPS, num_channels=3, head="classification",
                    num_labels=1001, top_pooling="global"):
    """The layer list of transformers' MobileNetV2 (``MobileNetV2Model`` with ``head=None``: the
    backbone, conv_1x1 and the pooler; ``'classification'``: + the linear classifier;
    ``'segmentation'``: the backbone up to its last block, then the DeepLabV3 head, without the
    conv_1x1 whose output that head never reads), with Keras's layer names.

    With ``tf_padding`` and ``first_layer_is_expansion`` (the hub checkpoints) the backbone is
    Keras's graph exactly."""
    layers = [L.InputLayer("input_layer")]
    c = hf_depth(STEM_FILTERS, depth_multiplier, depth_divisible_by, min_depth)
    x = _stem(layers, num_channels, c, tf_padding, eps)
    for block_id, hidden, cout, stride, dilation in hf_block_specs(
            depth_multiplier, depth_divisible_by, min_depth, expand_ratio, output_stride):
        expansion = 6 if block_id or not first_layer_is_expansion else 1
        # transformers' stem (MobileNetV2Stem, Keras's block 0) adds no residual, where Keras's
        # first block does if its widths match (depth_multiplier <= 0.265, 0.532-0.546, min_depth
        # or depth_divisible_by 32): with it such a checkpoint's logits were 11-132 % off
        x, c = _inverted_res_block(layers, x, c, block_id, expansion, cout, stride, dilation,
                                   tf_padding, hidden, eps, residual=block_id > 0)
    if head == "segmentation":
        _deeplab_head(layers, x, c, num_labels)
        return layers
    last = hf_last_filters(depth_multiplier, depth_divisible_by, min_depth, finegrained_output)
    x = _last_conv(layers, x, c, last, eps)
    if head == "classification":
        _classifier(layers, x, last, num_labels, None, top_pooling)
    else:
        layers.append(L.GlobalAveragePooling2D("global_average_pooling2d", [x]))
    return layers


def _conv_bn_relu(layers, name, x, cin, cout):
    layers += [L.Conv2D(name, [x], cin, cout, kernel=1),
               L.BatchNormalization(name + "_BN", [name], cout, DEEPLAB_BN_EPS),
               L.ReLU(name + "_relu", [name + "_BN"], max_value=None)]
    return name + "_relu"


def _deeplab_head(layers, x, cin, num_labels):
    """DeepLabV3's head as transformers builds it: [image pooling (global average, 1x1 conv, BN,
    ReLU, broadcast back), 1x1 conv branch] concatenated, projected, and a 1x1 classifier with bias.
    Its ReLUs are plain (no cap at 6) and its batch norms use eps 1e-5."""
    ch = DEEPLAB_CHANNELS
    layers.append(L.GlobalAveragePooling2D("aspp_pool", [x], keepdims=True))
    pool = _conv_bn_relu(layers, "aspp_pool_conv", "aspp_pool", cin, ch)
    layers.append(L.ResizeBilinear("aspp_pool_upsample", [pool, x], align_corners=True))
    aspp = _conv_bn_relu(layers, "aspp_conv", x, cin, ch)
    layers.append(L.Concatenate("aspp_concat", ["aspp_pool_upsample", aspp]))
    proj = _conv_bn_relu(layers, "aspp_projection", "aspp_concat", 2 * ch, ch)
    layers.append(L.Conv2D("logits", [proj], ch, num_labels, kernel=1, use_bias=True))
    return "logits"


MAX_EXPORT_BATCH = 4096


def export_batch(batch, exporter, dynamic=False):
    """An exporter's batch size: a whole number from 1 to MAX_EXPORT_BATCH (or None where the
    format has a dynamic batch, ``dynamic``), else an ArgumentError naming ``exporter``."""
    if batch is None and dynamic:
        return None
    if not is_whole(batch) or not 1 <= batch <= MAX_EXPORT_BATCH:
        what = " (or None for a dynamic one)" if dynamic else ""
        raise ArgumentError(f"{exporter}: batch must be a whole number from 1 to {MAX_EXPORT_BATCH}{what}, "
                            f"got {batch!r}")
    return int(batch)


MAX_EXPORT_BYTES = 2 ** 31 - 1  # an ONNX file (one protobuf message) or a .tflite (a flatbuffer) holds 2 GiB


def export_bytes(model):
    """The bytes of the float32 weights an exporter writes for ``model``: every weight but the
    batch norms', each of which folds into a bias of its channels."""
    return 4 * sum(layer.channels if isinstance(layer, L.BatchNormalization) else
                   sum(math.prod(shape) for shape in layer.weight_shapes()) for layer in model.layers)


def check_export_weights(model, exporter):
    """An ArgumentError naming ``exporter`` and the first layer whose weights are not set (a network
    built without them): the exporters read every layer's weights, which would fail half way."""
    for layer in model.layers:
        if len(layer.weights) != len(layer.weight_shapes()):
            raise ArgumentError(f"{exporter}: layer {layer.name!r} has no weights (it takes "
                                f"{', '.join(layer.weight_names)}): set them with set_weights first")


def check_export_bytes(model, exporter):
    """An ArgumentError naming ``exporter`` where the file could not hold ``model``'s weights (onnx
    fails to serialize such a model; LiteRT refuses such a flatbuffer), with 1 MiB for the graph."""
    size = export_bytes(model)
    if size + 2 ** 20 > MAX_EXPORT_BYTES:
        raise ArgumentError(f"{exporter}: this model's weights are {size / 2 ** 30:.2f} GiB in float32, more than "
                            "the 2 GiB an ONNX or TFLite file holds (a smaller alpha or fewer classes)")


def export_input_shape(model, input_size, exporter):
    """The (H, W, C) input an exporter writes for ``model``: its input_shape, with ``input_size=(H,
    W)`` fixing a size the model leaves open (each from 32 to 4096, as the model takes; a size the
    model fixes must be given as it is, since the file would otherwise compute what the model
    refuses to); an ArgumentError naming ``exporter`` if none is fixed or input_size is not so."""
    if not (hasattr(model, "input_shape") and hasattr(model, "layers")):
        raise ArgumentError(f"{exporter} takes a model (MobileNetV2(...) or from_pretrained(...)), "
                            f"got {model!r:.60}")
    shape = tuple(model.input_shape)
    if input_size is not None:
        if not is_items(input_size) or isinstance(input_size, (AbstractSet, Mapping)) \
                or not hasattr(input_size, "__len__") or len(input_size) != 2 \
                or not all(is_whole(d) for d in input_size):  # a set or dict has no height-then-width order
            raise ArgumentError(f"{exporter}: input_size must be (height, width), two whole numbers, "
                                f"got {input_size!r}")
        size = tuple(int(d) for d in input_size)
        if not all(MIN_SIZE <= d <= MAX_SIZE for d in size):
            raise ArgumentError(f"{exporter}: input_size height and width must be from {MIN_SIZE} to "
                                f"{MAX_SIZE}, got {size}")
        for d, fixed, side in zip(size, shape[:2], ("height", "width")):
            if fixed is not None and d != fixed:
                how = ("leave input_size out" if None not in shape[:2] else
                       f"give input_size with the {side} {fixed}")
                raise ArgumentError(f"{exporter}: this model takes inputs of {shape}, not input_size {size}; "
                                    f"{how}, or build the model with input_shape=(None, None, 3) "
                                    "to export it at another size")
        shape = size + (shape[2],)
    if None in shape:
        raise ArgumentError(f"{exporter} needs a model with a static input_shape (height and width given), "
                            "or input_size=(H, W)")
    return shape


def folded_kernel(conv, bn):
    """An exporter's view of a convolution: its kernel and bias with the batch norm ``bn`` after it
    folded in (``bn`` None: a convolution with its own bias): [3, 3, C] for a depthwise one, else
    Keras's [kh, kw, cin, cout]."""
    kernel = conv.weights[0]
    if bn is None:
        return kernel, conv.weights[1]
    if isinstance(conv, L.DepthwiseConv2D):
        kernel = kernel[:, :, :, 0]
    return fold_batchnorm(kernel, *bn.weights, eps=bn.epsilon)

