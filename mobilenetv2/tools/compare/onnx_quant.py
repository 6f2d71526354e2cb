"""Quantized ONNX graphs as OTHER: QDQ graphs (QuantizeLinear / DequantizeLinear around float
ops, what ``onnxruntime.quantization.quantize_static(..., quant_format=QuantFormat.QDQ)`` writes,
per-tensor or per-channel weights) and QOperator graphs (QLinearConv, QLinearAdd,
QLinearGlobalAveragePool, QGemm, QLinearSoftmax).

Weights are read dequantized (``(q - zero_point) * scale``), each conv keeping the graph's own
grid (``weight_q``, ``bias_q``) for the reference's fake quantization.  A Q -> DQ pair on an
activation becomes one ``qdq`` node whose output (the DQ's float tensor) is the layer's tensor;
a QOperator op's integer output is dequantized with its own scale and zero point after the run.
"""
import os
import tempfile

import numpy as np

from mobilenetv2.tools.compare.errors import CompareError
from mobilenetv2.tools.compare.graph import Node, QParams, affine_step

QOPERATOR_OPS = {"QLinearConv", "QLinearAdd", "QLinearGlobalAveragePool", "QGemm", "QLinearMul",
                 "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax"}


def _axis(node, helper, default=1):
    for a in node.attribute:
        if a.name == "axis":
            return helper.get_attribute_value(a)
    return default


def dequantize_constants(graph, consts, helper):
    """Add to ``consts`` the float value of every DequantizeLinear of constants (a quantized
    weight or bias); return {its output: QParams}."""
    grids = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in consts:
            continue
        ins = list(node.input) + ["", ""]
        if any(i and i not in consts for i in ins[:3]):
            continue
        q = consts[ins[0]]
        if q.dtype.kind not in "iu":
            continue
        zp = consts[ins[2]] if ins[2] else None
        axis = _axis(node, helper)
        try:
            grid = QParams.of(consts[ins[1]], zp, q.dtype, axis % max(q.ndim, 1))
            value = grid.dequantize(q)
        except (ValueError, TypeError) as exc:  # a scale or zero point that does not fit the tensor
            raise CompareError(f"DequantizeLinear {node.name or node.output[0]!r} of {ins[0]!r} {list(q.shape)}: its "
                               f"scale {list(np.shape(consts[ins[1]]))} / zero point do not fit (axis {axis}): {exc}") from None
        if not (np.all(np.isfinite(grid.scale)) and np.all(grid.scale > 0)):
            raise CompareError(f"DequantizeLinear {node.name or node.output[0]!r}: scales must be finite and positive")
        consts[node.output[0]] = value
        grids[node.output[0]] = grid
    return grids


def _grid(consts, scale, zp, default=np.uint8):
    if scale not in consts:
        return None
    z = consts.get(zp) if zp else None
    return QParams.of(consts[scale], z, z.dtype if z is not None else default)


def normalize(node, consts, grids, attrs):
    """The compare Node of a quantization op, or None where ``node`` is not one."""
    op, ins = node.op_type, list(node.input) + [""] * 9
    out = node.output[0] if node.output else ""
    if op == "QuantizeLinear" and ins[0] not in consts:
        z = consts.get(ins[2]) if ins[2] else None
        grid = QParams.of(consts[ins[1]], z, z.dtype if z is not None else np.uint8) if ins[1] in consts else None
        return Node("quant", [ins[0]], out, node.name, dict(grid=grid))
    if op == "DequantizeLinear" and ins[0] not in consts:
        return Node("dequant", [ins[0]], out, node.name, dict(grid=_grid(consts, ins[1], ins[2])))
    if op == "QLinearConv":
        wq, x_grid = consts.get(ins[3]), _grid(consts, ins[1], ins[2])
        weight = bias = w_grid = b_grid = None
        if wq is not None and ins[4] in consts:
            w_grid = QParams.of(consts[ins[4]], consts.get(ins[5]) if ins[5] else None, wq.dtype, 0)
            weight = w_grid.dequantize(wq)
            if ins[8] in consts and x_grid is not None:
                b_grid = QParams.of(np.asarray(x_grid.scale) * w_grid.scale, None, np.int32, 0)
                bias = b_grid.dequantize(consts[ins[8]])
        return Node("conv", [ins[0]], out, node.name, dict(
            weight=weight, bias=bias, group=attrs.get("group", 1), stride=tuple(attrs.get("strides", (1, 1))),
            pads=attrs.get("pads"), weight_q=w_grid, bias_q=b_grid, out_grid=_grid(consts, ins[6], ins[7])))
    if op == "QLinearAdd":
        return Node("add", [ins[0], ins[3]], out, node.name, dict(out_grid=_grid(consts, ins[6], ins[7])))
    if op == "QLinearGlobalAveragePool":
        return Node("pool", [ins[0]], out, node.name, dict(out_grid=_grid(consts, ins[3], ins[4])))
    if op == "QGemm":
        wq = consts.get(ins[3])
        weight = bias = w_grid = None
        if wq is not None and ins[4] in consts:
            w_grid = QParams.of(consts[ins[4]], consts.get(ins[5]) if ins[5] else None, wq.dtype,
                                0 if attrs.get("transB", 0) else 1)
            weight = w_grid.dequantize(wq)
            weight = weight if attrs.get("transB", 0) else weight.T  # to (out, in)
            x_grid = _grid(consts, ins[1], ins[2])
            if ins[6] in consts and x_grid is not None:
                bias = np.asarray(consts[ins[6]], np.float64) * np.asarray(x_grid.scale) * w_grid.scale
        return Node("dense", [ins[0]], out, node.name, dict(weight=weight, bias=bias, weight_q=w_grid,
                                                            out_grid=_grid(consts, ins[7], ins[8])))
    if op == "QLinearSoftmax":  # (com.microsoft) X, X_scale, X_zero_point, Y_scale, Y_zero_point
        return Node("softmax", [ins[0]], out, node.name, dict(out_grid=_grid(consts, ins[3], ins[4])))
    if op in QOPERATOR_OPS:
        return Node("other", [i for i in ins if i and i not in consts], out, node.name, dict(kind=op))
    return None


def runtime_weight_grids(model, ort, onnx, helper, numpy_helper, outputs, max_bytes):
    """{a Conv's or Gemm's output: (weight, its grid, bias, its grid)} for the float layers among
    ``outputs`` whose weights ONNX Runtime quantizes itself.  Its WeightBiasQuantization optimizer
    (microsoft/onnxruntime#22969, merged January 2025; from the basic level, on by default) gives
    a float Conv or Gemm that reads a DequantizeLinear and feeds a QuantizeLinear int8 weights and
    an int32 bias of its own (1.32: per tensor, asymmetric), so a layer left out of quantization
    (``nodes_to_exclude``) computes in int8 all the same.  Read from the graph it optimizes at
    that level, written to a temporary folder (which holds nothing else); an ONNX Runtime that
    keeps the weights float gives {}."""
    with tempfile.TemporaryDirectory(prefix="mnv2-ort-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = path
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
            if os.path.getsize(path) > max_bytes:  # its constants folded into more than a model may hold
                return {}
            optimized = onnx.load(path, load_external_data=False)
        except Exception:  # (the caller's own session reports a model ONNX Runtime refuses)
            return {}
    graph = optimized.graph
    if any(t.data_location == 1 for t in graph.initializer):  # EXTERNAL: never followed
        return {}
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    try:
        grids = dequantize_constants(graph, consts, helper)
    except CompareError:
        return {}
    out = {}
    for node in graph.node:
        ins = list(node.input) + ["", ""]
        if node.op_type not in ("Conv", "Gemm") or not node.output or node.output[0] not in outputs or \
                ins[1] not in grids:
            continue
        weight, bias = np.asarray(consts[ins[1]], np.float64), consts.get(ins[2]) if ins[2] else None
        if node.op_type == "Gemm":
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
                continue
            weight = weight if attrs.get("transB", 0) else weight.T  # to (out, in)
        out[node.output[0]] = (weight, grids[ins[1]], None if bias is None else np.asarray(bias, np.float64),
                               grids.get(ins[2]) if ins[2] else None)
    return out


def collapse_dynamic(graph, consts, helper):
    """ONNX Runtime's dynamic quantization (``quantize_dynamic``) as compare nodes: each
    DynamicQuantizeLinear -> ConvInteger / MatMulInteger (int8 weights) -> Cast -> Mul by the two
    scales' product -> Add of a constant bias is one ``conv`` or ``dense`` node from the float
    input to the Add's output, its weights dequantized on their grid and ``dynamic`` set: the input
    is rounded onto uint8 as it runs, one grid for the whole tensor (the batch).  Returns
    ({index of the ConvInteger / MatMulInteger: the node}, {indices of the other nodes it takes
    in}); a chain that is not exactly this is left as it is (its ops then read as unknown)."""
    producer, users = {}, {}
    for i, node in enumerate(graph.node):
        for o in node.output:
            producer[o] = i
        for name in node.input:
            users.setdefault(name, []).append(i)
    nodes = list(graph.node)

    def only_user(name, op):
        u = users.get(name, [])
        return u[0] if len(u) == 1 and nodes[u[0]].op_type == op else None

    collapsed, consumed = {}, set()
    for i, node in enumerate(nodes):
        if node.op_type not in ("ConvInteger", "MatMulInteger") or len(node.input) < 2:
            continue
        ins = list(node.input) + ["", ""]
        wq, d = consts.get(ins[1]), nodes[producer[ins[0]]] if ins[0] in producer else None
        if wq is None or wq.dtype.kind not in "iu" or d is None or d.op_type != "DynamicQuantizeLinear" or \
                list(d.output[:3]) != [ins[0], d.output[1], ins[2]] or len(d.output) < 3:
            continue
        wzp = consts.get(ins[3]) if ins[3] else np.zeros((), wq.dtype)
        cast = only_user(node.output[0], "Cast")
        mul = only_user(nodes[cast].output[0], "Mul") if cast is not None else None
        if wzp is None or mul is None:
            continue
        scale_mul = next((producer.get(x) for x in nodes[mul].input if x != nodes[cast].output[0]), None)
        if scale_mul is None or nodes[scale_mul].op_type != "Mul":
            continue
        w_scale = next((consts[x] for x in nodes[scale_mul].input if x != d.output[1] and x in consts), None)
        if w_scale is None or d.output[1] not in nodes[scale_mul].input:
            continue
        out, end = nodes[mul].output[0], mul
        add = only_user(out, "Add")
        bias = None
        if add is not None:
            other = next((x for x in nodes[add].input if x != out), None)
            if other in consts and consts[other].size > 1:
                bias, out, end = np.asarray(consts[other], np.float64).reshape(-1), nodes[add].output[0], add
        try:
            w_scale, wzp = np.asarray(w_scale, np.float64), np.asarray(wzp, np.int64)
            if not (np.all(np.isfinite(w_scale)) and np.all(w_scale > 0)):
                continue
            if node.op_type == "ConvInteger":  # (O, I / group, kh, kw); one scale or one per output channel
                shape = (-1, 1, 1, 1) if w_scale.size > 1 else ()
                weight = (wq.astype(np.int64) - wzp.reshape(shape)) * w_scale.reshape(shape)
                grid = QParams.of(w_scale, wzp, wq.dtype, 0)
            else:  # B (in, out): to (out, in)
                weight = ((wq.astype(np.int64) - wzp) * w_scale).T
                grid = QParams.of(w_scale, wzp, wq.dtype, 1)
        except (ValueError, TypeError):  # a scale or zero point that does not fit the weights
            continue
        if bias is not None and bias.size != weight.shape[0]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "ConvInteger":
            collapsed[i] = Node("conv", [d.input[0]], out, node.name, dict(
                weight=np.asarray(weight, np.float64), bias=bias, group=attrs.get("group", 1),
                stride=tuple(attrs.get("strides", (1, 1))), pads=attrs.get("pads"), weight_q=grid, bias_q=None,
                dynamic="per-tensor uint8"))
        else:
            collapsed[i] = Node("dense", [d.input[0]], out, node.name, dict(
                weight=np.asarray(weight, np.float64), bias=bias, weight_q=grid, bias_q=None,
                dynamic="per-tensor uint8"))
        consumed.update({producer[ins[0]], cast, mul, scale_mul, end})
    consumed -= set(collapsed)
    return collapsed, consumed


def collapse_qdq(nodes):
    """Each QuantizeLinear -> DequantizeLinear pair (the Q's output read by that DQ alone) as one
    ``qdq`` node from the Q's input to the DQ's output; return (nodes, grids, integer): ``grids``
    {tensor: QParams} holds every tensor whose values lie on an integer grid (a qdq output, a
    QOperator op's integer output), ``integer`` those of them the runner gets as integers and
    must dequantize itself."""
    consumers = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    out, grids, dropped, integer = [], {}, set(), set()
    for n in nodes:
        if id(n) in dropped:
            continue
        if n.op == "reshape" and n.inputs and n.inputs[0] in integer:  # Flatten of an int8 tensor
            grids[n.output] = grids[n.inputs[0]]
            integer.add(n.output)
        if n.op == "quant":
            c = consumers.get(n.output, [])
            if len(c) == 1 and c[0].op == "dequant" and n.attrs["grid"] is not None:
                dropped.add(id(c[0]))
                out.append(Node("qdq", n.inputs, c[0].output, n.name, dict(grid=n.attrs["grid"])))
                grids[c[0].output] = n.attrs["grid"]
                continue
            if n.attrs["grid"] is not None:
                grids[n.output] = n.attrs["grid"]
                integer.add(n.output)
        if n.attrs.get("out_grid") is not None:
            grids[n.output] = n.attrs["out_grid"]
            integer.add(n.output)
        out.append(n)
    return out, grids, {t: grids[t] for t in integer}


def input_grid(nodes, input_name):
    """The grid OTHER rounds its input to (a Q right after the input, through layout ops), or None."""
    return input_rounding(nodes, input_name)[0]


def input_rounding(nodes, input_name):
    """(the grid OTHER rounds its input to, the tensor it writes there) or (None, None); layout
    changes and OTHER's own input map before it (``graph.input_affine``: a PrePostProcessor's
    mean/scale, an export's ``(x - mean) / std``) looked through."""
    seen = {input_name}
    for n in nodes:
        if n.inputs and n.inputs[0] in seen:
            if n.op in ("reshape", "cast", "affine") or affine_step(n) is not None:
                seen.add(n.output)
            elif n.op in ("qdq", "quant"):
                return n.attrs["grid"], n.output
    return None, None


def collapse_casts(nodes, TensorProto):
    """Each Cast to bfloat16 or float16 read only by a Cast back to float, as one ``qdq`` node
    (``kind`` the narrow type, no grid): a graph computing in bfloat16 rounds its activations
    there; any other Cast to float as an Identity.  Return (nodes, {the float tensor after the
    pair: kind})."""
    narrow = {TensorProto.BFLOAT16: "bfloat16", TensorProto.FLOAT16: "float16"}
    consumers = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    out, rounded, dropped = [], {}, set()
    for n in nodes:
        if id(n) in dropped:
            continue
        if n.op == "cast" and n.attrs.get("to") in narrow:
            c = consumers.get(n.output, [])
            if len(c) == 1 and c[0].op == "cast" and c[0].attrs.get("to") == TensorProto.FLOAT:
                dropped.add(id(c[0]))
                out.append(Node("qdq", n.inputs, c[0].output, n.name, dict(grid=None, kind=narrow[n.attrs["to"]])))
                rounded[c[0].output] = narrow[n.attrs["to"]]
                continue
        if n.op == "cast" and n.attrs.get("to") == TensorProto.FLOAT:
            # any other Cast to float (float to float, as Keras 3's torch export writes around
            # every op): the topology looks through it, as through an Identity
            n = Node("reshape", n.inputs, n.output, n.name, dict(kind="Identity"))
        out.append(n)
    return out, rounded
