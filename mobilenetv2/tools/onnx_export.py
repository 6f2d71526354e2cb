"""Export a model to ONNX with the same weights, for running peers (ONNX Runtime, OpenVINO) on it.

The graph takes the model's NHWC float32 input (transposed to NCHW inside), folds every batch
norm into the convolution before it, merges Keras's ZeroPadding2D into the depthwise conv's pads
and writes TF-SAME padding explicitly, so it computes what the model computes.  ``onnx`` is an
optional extra: ``pip install "mobilenetv2[onnx]"``.
"""
import os

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network import arch
from mobilenetv2.network import layers as L
from mobilenetv2.errors import ArgumentError, is_whole


OPSETS = range(13, 22)  # the default ONNX domain's opsets this exporter writes (Clip takes its bounds as inputs from 11)


def export_onnx(model, path, batch=1, opset=13, input_size=None):
    """Write ``model`` as an ONNX file at ``path``; ``batch=None`` leaves the batch size dynamic
    (the symbolic axis ``batch`` of the input ``input`` and the output ``output``).
    ``input_size=(H, W)`` fixes the size of a model that takes any (a transformers checkpoint).

    ``opset`` (13..21) is the default domain's opset; the file's IR version is the oldest one that
    opset goes with in onnx's own release table (opset 13 -> IR 7, 15 -> 8, 19 -> 9, 21 -> 10), not
    the newest IR the installed onnx knows, so older runtimes load it: ONNX Runtime 1.15.1, the
    oldest tested (README), runs opsets 13-19 with a fixed batch and 13-18 with ``batch=None``
    (TF-slim's 7x7 head 13-18: it has no AveragePool-19).
    """
    if not is_whole(opset) or opset not in OPSETS:
        raise ArgumentError(f"export_onnx: opset must be a whole number from {OPSETS[0]} to {OPSETS[-1]}, "
                            f"got {opset!r}")
    opset = int(opset)
    batch = arch.export_batch(batch, "export_onnx", dynamic=True)
    path = os.path.abspath(files.check_output_path(path, "export_onnx"))
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError('export_onnx needs the onnx package: pip install "mobilenetv2[onnx]"') from None
    input_shape = arch.export_input_shape(model, input_size, "export_onnx")
    arch.check_export_bytes(model, "export_onnx")
    arch.check_export_weights(model, "export_onnx")
    h, w, c = input_shape
    shapes = arch.output_shapes(model.layers, input_shape)
    nodes, inits = [], []
    tensor = {model.layers[0].name: "nchw"}
    nodes.append(helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]))

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    const("relu6_min", np.array(0.0, np.float32))
    const("relu6_max", np.array(6.0, np.float32))
    pending_pads = {}
    for layer in model.layers[1:]:
        src = tensor.get(layer.inputs[0]) if layer.inputs else None
        out = layer.name
        if isinstance(layer, L.ZeroPadding2D):
            pending_pads[layer.name] = layer.pads(*shapes[layer.inputs[0]][:2])
            tensor[layer.name] = src
            continue
        if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
            # a convolution with its own bias has no batch norm after it (DeepLabV3's logits)
            bn = None if getattr(layer, "use_bias", False) else next(x for x in model.layers
                                                                     if x.inputs == (layer.name,))
            dilation = getattr(layer, "dilation", 1)
            wk, bias = arch.folded_kernel(layer, bn)
            if isinstance(layer, L.DepthwiseConv2D):
                oihw = wk.transpose(2, 0, 1)[:, None]  # [C, 1, 3, 3]
                group = layer.channels
            else:
                oihw = wk.transpose(3, 2, 0, 1)
                group = 1
            # its own padding (on its input: a ZeroPadding2D's output where one comes before it), plus
            # that ZeroPadding2D's, as export_tflite writes them
            own = layer.pads(*shapes[layer.inputs[0]][:2])
            zero = pending_pads.pop(layer.inputs[0], (0, 0, 0, 0))
            top, bottom, left, right = (a + b for a, b in zip(zero, own))
            result = bn.name if bn is not None else out
            nodes.append(helper.make_node(
                "Conv", [src, const(out + "/W", oihw), const(out + "/B", bias)], [result],
                kernel_shape=list(oihw.shape[2:]), strides=[layer.stride] * 2,
                pads=[top, left, bottom, right], group=group, dilations=[dilation] * 2))
            tensor[layer.name] = tensor[result] = result
        elif isinstance(layer, L.BatchNormalization):
            continue  # folded into its convolution
        elif isinstance(layer, L.ReLU):
            if layer.max_value is None:
                nodes.append(helper.make_node("Relu", [src], [out]))
            else:
                nodes.append(helper.make_node("Clip", [src, "relu6_min", "relu6_max"], [out]))
            tensor[out] = out
        elif isinstance(layer, L.GlobalAveragePooling2D) and getattr(layer, "keepdims", False):
            nodes.append(helper.make_node("GlobalAveragePool", [src], [out]))
            tensor[out] = out
        elif isinstance(layer, L.ResizeBilinear):
            if batch is None:
                raise ArgumentError("export_onnx: a model with a resize (DeepLabV3) needs a fixed batch size")
            oh, ow, oc = shapes[layer.name]
            inits.append(numpy_helper.from_array(np.array([batch, oc, oh, ow], np.int64),
                                                         out + "/sizes"))
            mode = "align_corners" if layer.align_corners else "pytorch_half_pixel"
            nodes.append(helper.make_node("Resize", [src, "", "", out + "/sizes"], [out], mode="linear",
                                          coordinate_transformation_mode=mode))
            tensor[out] = out
        elif isinstance(layer, L.Concatenate):
            nodes.append(helper.make_node("Concat", [tensor[i] for i in layer.inputs], [out], axis=1))
            tensor[out] = out
        elif isinstance(layer, L.Add):
            nodes.append(helper.make_node("Add", [tensor[i] for i in layer.inputs], [out]))
            tensor[out] = out
        elif isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
            op = "GlobalMaxPool" if isinstance(layer, L.GlobalMaxPooling2D) else "GlobalAveragePool"
            nodes.append(helper.make_node(op, [src], [out + "/4d"]))
            nodes.append(helper.make_node("Flatten", [out + "/4d"], [out]))
            tensor[out] = out
        elif isinstance(layer, L.AveragePooling2D):  # TF-slim's head: VALID, stride 1
            kh, kw = layer.window(*shapes[layer.inputs[0]][:2])
            nodes.append(helper.make_node("AveragePool", [src], [out], kernel_shape=[kh, kw], strides=[1, 1]))
            tensor[out] = out
        elif isinstance(layer, L.Dense):
            kernel, bias = layer.weights
            logits = out + "/logits" if layer.activation else out
            if len(shapes[layer.name]) == 3:  # over a grid (TF-slim's 7x7 head above 224): a 1x1 conv
                nodes.append(helper.make_node("Conv", [src, const(out + "/W", kernel.T[:, :, None, None]),
                                                       const(out + "/B", bias)], [logits], kernel_shape=[1, 1]))
            else:
                nodes.append(helper.make_node("Gemm", [src, const(out + "/W", kernel), const(out + "/B", bias)],
                                              [logits]))
            if layer.activation == "softmax":  # over the classes: axis 1 of [N, K] and of NCHW alike
                nodes.append(helper.make_node("Softmax", [logits], [out], axis=1))
            tensor[out] = out
        else:  # every layer the package builds is written above: a new one must be too
            raise ArgumentError(f"export_onnx cannot export layer {layer.name!r} ({type(layer).__name__})")
    last = model.layers[-1].name
    n = "batch" if batch is None else batch  # a dynamic batch is one named axis, the input's and the output's
    out_shape = [n] + list(shapes[last])
    final = tensor[last]
    if len(shapes[last]) == 3:  # a feature map: back to NHWC
        nodes.append(helper.make_node("Transpose", [final], ["output"], perm=[0, 2, 3, 1]))
    else:
        nodes.append(helper.make_node("Identity", [final], ["output"]))
    graph = helper.make_graph(  # (onnx requires a graph name: MobileNetV2(name="") has none)
        nodes, model.name or "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [n, h, w, c])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], inits)
    opsets = [helper.make_opsetid("", opset)]
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="mobilenetv2",
                                   ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(onnx_model)
    with files.atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(onnx_model, tmp)
    return path
