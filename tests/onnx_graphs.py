"""Hand-built ONNX graphs of MobileNetV2 as torch.onnx writes a TF-ported model (timm's ``tf_``
models), with optional defects, for the compare tests; built with onnx.helper (no torch).

What a real export looks like: NCHW input with a dynamic batch, batch norms folded into the convs
(conv + bias, anonymous initializer names), TF "same" padding of stride-2 convs as separate Pad
nodes whose pads a small subgraph computes from the input's shape at run time, Clip bounds from
Constant nodes, scoped tensor names (/features/features.3/conv/...), GlobalAveragePool + Flatten +
Gemm.  Defects reproduce the classic conversion bugs on purpose.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mobilenetv2.network import layers as L
from mobilenetv2.engines.numpy_kernels import fold_batchnorm


def _unit_prefix(i):
    return f"/features/features.{i}/conv"


def torch_style(model, path, sym_pads=(), relu=(), eps=None, input_map=None, weights_dtype=None,
                classes_1001=False, opset=13, bn_nodes=None):
    """``bn_nodes``: keep each batch norm as a BatchNormalization node with that epsilon (an
    export without constant folding) instead of folding it."""
    eps = eps or {}
    nodes, inits = [], []
    counter = [0]

    def const(array, dtype=np.float32):
        counter[0] += 1
        name = f"onnx::Conv_{counter[0]}"  # anonymous, as torch.onnx names folded weights
        inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def constant_node(value, scope):
        out = f"{scope}/Constant_output_0"
        nodes.append(helper.make_node("Constant", [], [out], name=f"{scope}/Constant",
                                      value=numpy_helper.from_array(np.asarray(value, np.float32))))
        return out

    def rounded(a):
        if weights_dtype is None:
            return a
        return a.astype(weights_dtype).astype(np.float64)

    h, w, _ = model.input_shape
    x = "input"
    if input_map == "unit":  # the graph expects [0, 1] and maps it to [-1, 1] itself
        nodes.append(helper.make_node("Mul", [x, const(2.0)], ["/pre/Mul_output_0"]))
        nodes.append(helper.make_node("Sub", ["/pre/Mul_output_0", const(1.0)], ["/pre/Sub_output_0"]))
        x = "/pre/Sub_output_0"
    elif input_map == "bgr":  # the graph expects BGR input
        idx = "pre_idx"
        inits.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), idx))
        nodes.append(helper.make_node("Gather", [x, idx], ["/pre/Gather_output_0"], axis=1))
        x = "/pre/Gather_output_0"
    elif input_map == "nhwc_as_nchw":  # declares NCHW, but reads the buffer as NHWC
        shape = "pre_shape"
        inits.append(numpy_helper.from_array(np.array([-1, h, w, 3], np.int64), shape))
        nodes.append(helper.make_node("Reshape", [x, shape], ["/pre/Reshape_output_0"]))
        nodes.append(helper.make_node("Transpose", ["/pre/Reshape_output_0"], ["/pre/Transpose_output_0"],
                                      perm=[0, 3, 1, 2]))
        x = "/pre/Transpose_output_0"
    tensor = {model.layers[0].name: x}
    unit = 0
    for layer in model.layers[1:]:
        src = tensor.get(layer.inputs[0]) if layer.inputs else None
        if isinstance(layer, L.ZeroPadding2D):
            tensor[layer.name] = src
            continue
        if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
            unit += 1
            scope = f"{_unit_prefix(unit)}/conv.{layer.name}"
            bn = next(b for b in model.layers if b.inputs == (layer.name,))
            k = layer.weights[0]
            if isinstance(layer, L.DepthwiseConv2D):
                wk, bias = fold_batchnorm(k[:, :, :, 0].astype(np.float64), *bn.weights, eps=eps.get(bn.name, bn.epsilon))
                oihw, group, ksize = wk.transpose(2, 0, 1)[:, None], layer.channels, 3
            else:
                wk, bias = fold_batchnorm(k.astype(np.float64), *bn.weights, eps=eps.get(bn.name, bn.epsilon))
                oihw, group, ksize = wk.transpose(3, 2, 0, 1), 1, layer.kernel
            pads = [0, 0, 0, 0]
            if ksize == 3 and (layer.stride == 1 or layer.name in sym_pads):
                pads = [1, 1, 1, 1]
            elif ksize == 3:
                src = _dynamic_same_pad(nodes, inits, src, scope)
            if bn_nodes is not None:  # the raw kernel, then the batch norm as a node
                oihw = k[:, :, :, 0].transpose(2, 0, 1)[:, None] if group > 1 else k.transpose(3, 2, 0, 1)
            conv_in = [src, const(rounded(oihw))] + ([] if bn_nodes is not None else [const(rounded(bias))])
            nodes.append(helper.make_node(
                "Conv", conv_in, [f"{scope}/Conv_output_0"],
                name=f"{scope}/Conv", kernel_shape=[ksize, ksize], strides=[layer.stride] * 2,
                pads=pads, group=group))
            tensor[layer.name] = tensor[bn.name] = f"{scope}/Conv_output_0"
            if bn_nodes is not None:
                out = f"{scope}/BatchNormalization_output_0"
                nodes.append(helper.make_node("BatchNormalization", [tensor[layer.name]] + [const(a) for a in bn.weights],
                                              [out], name=f"{scope}/BatchNormalization", epsilon=bn_nodes))
                tensor[bn.name] = out
        elif isinstance(layer, L.BatchNormalization):
            continue
        elif isinstance(layer, L.ReLU):
            scope = f"{_unit_prefix(unit)}/act.{layer.name}"
            out = f"{scope}/Clip_output_0"
            if layer.name in relu:
                nodes.append(helper.make_node("Relu", [src], [out], name=f"{scope}/Relu"))
            else:
                lo, hi = constant_node(0.0, scope + "/min"), constant_node(6.0, scope + "/max")
                nodes.append(helper.make_node("Clip", [src, lo, hi], [out], name=f"{scope}/Clip"))
            tensor[layer.name] = out
        elif isinstance(layer, L.Add):
            out = f"{_unit_prefix(unit)}/Add_output_0"
            nodes.append(helper.make_node("Add", [tensor[i] for i in layer.inputs], [out]))
            tensor[layer.name] = out
        elif isinstance(layer, L.GlobalAveragePooling2D):
            nodes.append(helper.make_node("GlobalAveragePool", [src], ["/GlobalAveragePool_output_0"]))
            nodes.append(helper.make_node("Flatten", ["/GlobalAveragePool_output_0"], ["/Flatten_output_0"]))
            tensor[layer.name] = "/Flatten_output_0"
        elif isinstance(layer, L.Dense):
            kernel, b = (np.asarray(a, np.float64) for a in layer.weights)
            wt = kernel.T
            if classes_1001:
                wt = np.concatenate([np.full((1, wt.shape[1]), 0.01), wt])
                b = np.concatenate([[0.5], b])
            nodes.append(helper.make_node("Gemm", [src, const(rounded(wt)), const(rounded(b))],
                                          ["logits"], name="/classifier/classifier.1/Gemm", transB=1))
            tensor[layer.name] = "logits"
    last = tensor[model.layers[-1].name]
    n_out = ["batch", (1001 if classes_1001 else model.classes)] if model.include_top else ["batch", None, None, None]
    graph = helper.make_graph(
        nodes, "torch_style_mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, n_out)], inits)
    opsets = [helper.make_opsetid("", opset)]
    m = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                          producer_name="pytorch-style")
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return str(path)


def _dynamic_same_pad(nodes, inits, src, scope):
    """Pad ``src`` (NCHW) as TF "same" for a 3x3 stride-2 conv, the pads computed from its shape."""
    def c(name, value):
        inits.append(numpy_helper.from_array(np.array(value, np.int64), f"{scope}/{name}"))
        return f"{scope}/{name}"

    def op(kind, ins, tag, **kw):
        out = f"{scope}/pad/{tag}_output_0"
        nodes.append(helper.make_node(kind, ins, [out], name=f"{scope}/pad/{tag}", **kw))
        return out

    shape = op("Shape", [src], "Shape")
    hw = op("Gather", [shape, c("hw_idx", [2, 3])], "Gather", axis=0)
    out = op("Div", [op("Add", [hw, c("one", [1, 1])], "Add0"), c("two", [2, 2])], "Div")  # ceil(h / 2)
    need = op("Sub", [op("Add", [op("Mul", [op("Sub", [out, c("one_b", [1, 1])], "Sub0"), c("two_b", [2, 2])], "Mul"),
                                 c("three", [3, 3])], "Add1"), hw], "Sub1")
    total = op("Max", [need, c("zero", [0, 0])], "Max")
    before = op("Div", [total, c("two_c", [2, 2])], "Div1")
    after = op("Sub", [total, before], "Sub2")
    pads = op("Concat", [c("z2", [0, 0]), before, c("z2b", [0, 0]), after], "Concat", axis=0)
    return op("Pad", [src, pads], "Pad", mode="constant")


def edit_export(path, out, stem_pads=None, conv_pads=None, clip_to_relu=None, round_f16=False,
                input_unit=False):
    """Defects edited into an ``export_onnx`` file: pads of named convs, a Clip made Relu, every
    initializer rounded to float16, or a [0, 1] input mapped to [-1, 1] inside."""
    m = onnx.load(str(path))
    g = m.graph
    for node in g.node:
        if node.op_type == "Conv" and conv_pads and node.output[0] in conv_pads:
            for a in node.attribute:
                if a.name == "pads":
                    a.ints[:] = conv_pads[node.output[0]]
        if node.op_type == "Clip" and clip_to_relu and node.output[0] == clip_to_relu:
            node.op_type = "Relu"
            del node.input[1:]
    if round_f16:
        for i, t in enumerate(g.initializer):
            a = numpy_helper.to_array(t)
            if a.dtype == np.float32:
                g.initializer[i].CopyFrom(numpy_helper.from_array(a.astype(np.float16).astype(np.float32), t.name))
    if input_unit:
        first = g.node[0]
        g.initializer.extend([numpy_helper.from_array(np.array(2.0, np.float32), "pre_two"),
                              numpy_helper.from_array(np.array(1.0, np.float32), "pre_one")])
        pre = [helper.make_node("Mul", ["input", "pre_two"], ["pre_mul"]),
               helper.make_node("Sub", ["pre_mul", "pre_one"], ["pre_sub"])]
        first.input[0] = "pre_sub"
        for n in reversed(pre):
            g.node.insert(0, n)
    onnx.save(m, str(out))
    return str(out)


def lively_model(shape=(96, 96, 3)):
    """The 0.35 model the compare tests break on purpose: logits out, lively weights (seed 3)."""
    from mobilenetv2 import MobileNetV2
    return lively_weights(MobileNetV2(shape, alpha=0.35, weights=None, classifier_activation=None), seed=3)


def lively_weights(model, seed=0):
    """Seeded weights under which every ReLU6 clips at both ends and batch norms matter (the
    initial Keras weights keep activations small and batch norms at identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.weighted_layers():
        arrays = []
        for wname, shape in zip(layer.weight_names, layer.weight_shapes()):
            if wname == "kernel":
                fan_in = shape[0] * shape[1] if isinstance(layer, L.DepthwiseConv2D) else int(np.prod(shape[:-1]))
                arrays.append(rng.normal(0, 1.0 / np.sqrt(fan_in), shape))
            elif wname == "gamma":
                arrays.append(rng.uniform(1.0, 2.0, shape))
            elif wname == "moving_variance":
                arrays.append(rng.uniform(0.5, 2.0, shape))
            elif wname in ("beta", "moving_mean", "bias"):
                arrays.append(rng.uniform(-0.2, 0.2, shape))
        layer.set_weights(arrays, model.dtype)
    return model


def tf_style(model, path, relu=(), eps=None):
    """The graph as tf2onnx writes a Keras model it could not optimize: NHWC input, each conv
    between a pair of Transposes, batch norms written out as Mul and Add by per-channel constants
    in NHWC, ReLU6 as Clip, ReduceMean + Squeeze, MatMul + Add; TF's "same" padding in the conv's
    own pads (0 before, 1 after on even sides)."""
    eps = eps or {}
    nodes, inits = [], []
    shapes = {}
    from mobilenetv2.network import arch
    shapes = arch.output_shapes(model.layers, model.input_shape)

    def const(name, array, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    def node(op, ins, name, **kw):
        nodes.append(helper.make_node(op, ins, [name], name=name, **kw))
        return name

    tensor = {model.layers[0].name: "input_1:0"}
    pending = {}
    for layer in model.layers[1:]:
        src = tensor.get(layer.inputs[0]) if layer.inputs else None
        scope = f"model/{layer.name}"
        if isinstance(layer, L.ZeroPadding2D):
            pending[layer.name] = layer.pads(*shapes[layer.inputs[0]][:2])
            tensor[layer.name] = src
        elif isinstance(layer, (L.Conv2D, L.DepthwiseConv2D)):
            k = layer.weights[0].astype(np.float64)
            if isinstance(layer, L.DepthwiseConv2D):
                oihw, group, ksize = k[:, :, :, 0].transpose(2, 0, 1)[:, None], layer.channels, 3
            else:
                oihw, group, ksize = k.transpose(3, 2, 0, 1), 1, layer.kernel
            t, b, lft, r = pending.pop(layer.inputs[0], None) or layer.pads(*shapes[layer.inputs[0]][:2])
            nchw = node("Transpose", [src], scope + "/to_nchw", perm=[0, 3, 1, 2])
            conv = node("Conv", [nchw, const(scope + "/kernel", oihw)], scope + "/Conv2D", kernel_shape=[ksize, ksize],
                        strides=[layer.stride] * 2, pads=[t, lft, b, r], group=group)
            tensor[layer.name] = node("Transpose", [conv], scope + "/to_nhwc", perm=[0, 2, 3, 1])
        elif isinstance(layer, L.BatchNormalization):
            g, be, mu, var = (np.asarray(a, np.float64) for a in layer.weights)
            inv = g / np.sqrt(var + eps.get(layer.name, layer.epsilon))
            mul = node("Mul", [src, const(scope + "/mul/y", inv)], scope + "/batchnorm/mul")
            tensor[layer.name] = node("Add", [mul, const(scope + "/sub", be - mu * inv)], scope + "/batchnorm/add_1")
        elif isinstance(layer, L.ReLU):
            if layer.name in relu:
                tensor[layer.name] = node("Relu", [src], scope + "/Relu")
            else:
                tensor[layer.name] = node("Clip", [src, const(scope + "/min", 0.0), const(scope + "/max", 6.0)],
                                          scope + "/Relu6")
        elif isinstance(layer, L.Add):
            tensor[layer.name] = node("Add", [tensor[i] for i in layer.inputs], scope + "/add")
        elif isinstance(layer, L.GlobalAveragePooling2D):
            mean = node("ReduceMean", [src], scope + "/Mean", axes=[1, 2], keepdims=1)
            tensor[layer.name] = node("Squeeze", [mean, const(scope + "/axes", [1, 2], np.int64)], scope + "/Squeeze")
        elif isinstance(layer, L.Dense):
            kernel, bias = layer.weights
            mm = node("MatMul", [src, const(scope + "/kernel", kernel)], scope + "/MatMul")
            tensor[layer.name] = node("Add", [mm, const(scope + "/bias", bias)], scope + "/BiasAdd")
    h, w, _ = model.input_shape
    last = tensor[model.layers[-1].name]
    graph = helper.make_graph(nodes, "tf2onnx_style",
                              [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["unk__0", h, w, 3])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 13)]
    m = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.save(m, str(path))
    return str(path)


def our_exports(model, folder, name):
    """``model`` exported by export_onnx and, where LiteRT is installed to run it, export_tflite."""
    from mobilenetv2 import export_onnx, export_tflite
    files = [export_onnx(model, folder / f"{name}.onnx")]
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return files
    return files + [export_tflite(model, folder / f"{name}.tflite")]



def with_input_resize(path, out, hw, mode="linear", before=None, after=None, by="scales", at="input", roi=None):
    """An ``export_onnx`` file (NHWC input, a Transpose to NCHW, the stem conv) taking ``hw``
    images that it resizes itself to the size the export took (an ONNX Resize, ``mode``, given
    ``by`` scales or sizes: sizes need the export's static batch), with per-channel maps (a, b)
    x -> a * x + b ``before`` the resize (on the NHWC input) and ``after`` it (on the NCHW
    tensor).  ``at="stem"``: a Resize to the same size (an identity) reads the stem's ReLU6
    instead, a layer of the graph's, the input left as it is.  ``roi``: a crop, the Resize's
    coordinate_transformation_mode tf_crop_and_resize with that region of interest (NCHW starts,
    then ends, normalized; with ``by="sizes"``), extrapolating 0 past the image."""
    m = onnx.load(str(path))
    g = m.graph
    dims = g.input[0].type.tensor_type.shape.dim
    size = [dims[1].dim_value, dims[2].dim_value]
    conv = next(n for n in g.node if n.op_type == "Conv")
    src = conv.input[0] if at == "input" else next(n.output[0] for n in g.node if n.op_type == "Clip")
    readers = [n for n in g.node if src in n.input]

    def const(name, value, dtype=np.float32):
        g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def affine(x, ab, shape, tag):
        return [helper.make_node("Mul", [x, const(f"{tag}_a", np.reshape(ab[0], shape))], [f"{tag}_mul"]),
                helper.make_node("Add", [f"{tag}_mul", const(f"{tag}_b", np.reshape(ab[1], shape))], [f"{tag}_add"])]

    if before is not None:  # ahead of the Transpose: per channel of the NHWC input
        g.node[0].input[0] = "pre_add"
        for n in reversed(affine("input", before, (-1,), "pre")):
            g.node.insert(0, n)
    if by == "scales":
        sides = [1.0, 1.0] if at == "stem" else [size[0] / hw[0], size[1] / hw[1]]
        ins = [src, "", const(f"{at}_resize_scales", [1.0, 1.0] + sides)]
    else:
        w = next(numpy_helper.to_array(t) for t in g.initializer if t.name == conv.input[1])
        ins = [src, "", "", const(f"{at}_resize_sizes", [dims[0].dim_value, 3 if at == "input" else w.shape[0]] + size,
                                  np.int64)]
    crop = {}
    if roi is not None:
        ins[1] = const(f"{at}_resize_roi", roi)
        crop = dict(coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=0.0)
    added = [helper.make_node("Resize", ins, [f"{at}_resized"], name=f"/{at}/Resize", mode=mode, **crop)]
    if after is not None:
        added += affine(f"{at}_resized", after, (1, -1, 1, 1), "post")
    for r in readers:
        r.input[:] = [added[-1].output[0] if i == src else i for i in r.input]
    k = next(i for i, n in enumerate(g.node) if src in n.output) + 1
    for n in reversed(added):
        g.node.insert(k, n)
    if at == "input":
        dims[1].dim_value, dims[2].dim_value = hw
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return str(out)
