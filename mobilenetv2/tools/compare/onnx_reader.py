"""Read an ONNX file as OTHER: its nodes in the compare vocabulary, and ONNX Runtime running a
copy of it with every intermediate float tensor made a graph output."""

import numpy as np

from mobilenetv2 import files
from mobilenetv2.tools.compare.errors import MAX_MODEL_BYTES, CompareError, read_input, require
from mobilenetv2.tools.compare import onnx_quant
from mobilenetv2.tools.compare.graph import Node, OtherModel, image_input, input_maps, tensor_layouts

MAX_NODES = 20000  # exports of MobileNetV2 (QDQ int8, tf2onnx's transposes, local functions inlined) have < 1,000
_RESHAPES = {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
_FLOAT_OPS = {"Conv", "BatchNormalization", "Relu", "Clip", "Add", "Mul", "Sub", "Div", "Pad",
              "Transpose", "Reshape", "Flatten", "Squeeze", "GlobalAveragePool", "ReduceMean",
              "GlobalMaxPool", "ReduceMax", "AveragePool",
              "Gemm", "MatMul", "Softmax", "Max", "Min", "Identity", "Cast", "Sigmoid", "LogSoftmax", "Tanh", "Exp",
              "Resize", "Upsample"}


def _tensor(t, path, numpy_helper):
    """The value of an initializer or a Constant's tensor, its declared dims checked against the
    values it stores before NumPy reads them (a tensor of 2**40 elements over 432 bytes, bytes
    left over); None for a type that holds no numbers (strings: the runtime judges them)."""
    n = 1
    for d in t.dims:
        n *= d
    stored = len(t.raw_data) if t.HasField("raw_data") else sum(len(f) for f in (
        t.float_data, t.int32_data, t.int64_data, t.double_data, t.uint64_data, t.string_data))
    if any(d < 0 for d in t.dims) or n > 2 * stored:  # no type packs more than 2 values a byte or entry
        raise CompareError(f"{path!r}: tensor {t.name[:80]!r} declares dims {list(t.dims)[:8]} ({n} values) "
                           f"but stores {stored} {'bytes' if t.HasField('raw_data') else 'values'} (a damaged file)")
    try:
        value = numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError) as exc:  # raw bytes that do not fill the dims, an unknown data type
        raise CompareError(f"{path!r}: tensor {t.name[:80]!r} of dims {list(t.dims)[:8]} cannot be read: "
                           f"{str(exc)[:120]} (a damaged file)") from None
    return value if value.dtype.kind in "biuf" else None


def _constants(graph, path, numpy_helper):
    """Initializers and Constant-node values by tensor name (Identity of a constant included)."""
    consts = {t.name: _tensor(t, path, numpy_helper) for t in graph.initializer}
    if len(consts) != len(graph.initializer):  # which one ONNX Runtime runs is not the file's to leave open
        seen = set()
        twice = next(t.name for t in graph.initializer if t.name in seen or seen.add(t.name))
        raise CompareError(f"{path!r} holds two initializers named {twice[:80]!r} (a damaged file)")
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = _tensor(a.t, path, numpy_helper)
                elif a.name == "value_float":
                    consts[node.output[0]] = np.array(a.f, np.float32)
                elif a.name == "value_floats":
                    consts[node.output[0]] = np.array(a.floats, np.float32)
                elif a.name == "value_int":
                    consts[node.output[0]] = np.array(a.i, np.int64)
                elif a.name == "value_ints":
                    consts[node.output[0]] = np.array(a.ints, np.int64)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
        elif node.op_type == "Reshape" and len(node.input) == 2 and all(i in consts for i in node.input):
            # a bias reshaped to (1, C, 1, 1) (ONNX Runtime's quantize_dynamic writes one per conv)
            value, shape = consts[node.input[0]], consts[node.input[1]]
            if value is not None and shape is not None and shape.ndim == 1 and shape.dtype.kind == "i" and \
                    np.all((shape >= 1) | (shape == -1)) and np.sum(shape == -1) <= 1 and shape.size <= 8:
                known = int(np.prod(shape[shape >= 1]))
                if known and value.size % known == 0 and (value.size == known or np.any(shape == -1)):
                    consts[node.output[0]] = value.reshape(tuple(int(d) for d in shape))
    return {name: value for name, value in consts.items() if value is not None}


def _inlined_nodes(model, depth=0, nodes=None, sizes=None):
    """How many nodes the graph has with its local functions inlined, counted up to past MAX_NODES
    without inlining them (a function calling another twice, 40 deep, is 2**40 nodes in a few KB;
    one calling itself, endless): a call nested past 64 functions counts as past MAX_NODES."""
    functions = {(f.domain, f.name): f for f in model.functions}
    sizes = {} if sizes is None else sizes
    total = 0
    for node in model.graph.node if nodes is None else nodes:
        key = (node.domain, node.op_type)
        if key in functions and key not in sizes:
            sizes[key] = (MAX_NODES + 1 if depth >= 64
                          else _inlined_nodes(model, depth + 1, functions[key].node, sizes))
        total += sizes.get(key, 1) if key in functions else 1
        if total > MAX_NODES:
            break
    return total


def _check_schema(model, path, defs):
    """Refuse a node whose inputs, outputs or attribute types its op's schema does not allow (a
    Conv without its weight, a node with no output, strides given as floats), or a name protobuf
    hands Python as bytes (not UTF-8): the readers below index and convert them as the schema
    promises, before the runtime sees the graph."""
    g = model.graph
    names = [t.name for t in g.initializer] + [v.name for v in list(g.input) + list(g.output)]
    if not all(isinstance(n, str) for n in names + [x for node in g.node for x in (
            node.name, node.op_type, node.domain, *node.input, *node.output)]):
        raise CompareError(f"{path!r} names a node or tensor in bytes that are not UTF-8 (a damaged file)")
    opsets = {"" if o.domain == "ai.onnx" else o.domain: o.version for o in model.opset_import}
    for node in model.graph.node:
        domain = "" if node.domain == "ai.onnx" else node.domain
        try:
            schema = defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
        except defs.SchemaError:  # an op onnx does not know (com.microsoft's, a custom one): the runtime judges it
            schema = None
        least, most = (schema.min_input, schema.max_input) if schema is not None else (0, len(node.input))
        declared = schema.attributes if schema is not None else {}
        wrong = [a.name for a in node.attribute if a.name in declared and int(declared[a.name].type.value) != a.type]
        if wrong or not (node.output and node.output[0] and least <= len(node.input) <= most
                         and all(node.input[:least])):
            raise CompareError(f"{path!r}: node {(node.name or node.op_type)[:80]!r} ({node.op_type[:40]}) has inputs "
                               f"{[i[:40] for i in node.input[:6]]}, outputs {[o[:40] for o in node.output[:4]]}"
                               + (f" and attributes {wrong[:4]} of a type" if wrong else "")
                               + " its op does not take (a damaged file)")


def _scalar(value):
    """A Clip bound as a float; None where absent or not one value (the runtime refuses that)."""
    return float(np.ravel(value)[0]) if value is not None and np.size(value) == 1 else None


def _attrs(node, helper):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _normalize(node, consts, helper, grids):
    """One ONNX node as a compare Node, or None for nodes that compute only constants."""
    op, ins, out = node.op_type, list(node.input), node.output[0] if node.output else ""
    if op == "Constant" or (ins and all(i in consts or i == "" for i in ins)):
        return None
    a = _attrs(node, helper)
    quantized = onnx_quant.normalize(node, consts, grids, a)
    if quantized is not None:
        return quantized
    data = [i for i in ins if i and i not in consts]
    if op == "Conv":
        w = consts.get(ins[1])
        bias = consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
        return Node("conv", [ins[0]], out, node.name, dict(
            weight=None if w is None else np.asarray(w, np.float64), bias=bias, group=a.get("group", 1),
            stride=tuple(a.get("strides", (1, 1))), pads=a.get("pads"),
            weight_q=grids.get(ins[1]), bias_q=grids.get(ins[2]) if len(ins) > 2 else None))
    if op == "BatchNormalization":
        g, b, m, v = (consts.get(i) for i in ins[1:5])
        return Node("bn", [ins[0]], out, node.name, dict(gamma=g, beta=b, mean=m, var=v,
                                                           eps=a.get("epsilon", 1e-5)))
    if op == "Relu":
        return Node("relu", data, out, node.name)
    if op == "Clip":
        lo = consts.get(ins[1]) if len(ins) > 1 and ins[1] else a.get("min")
        hi = consts.get(ins[2]) if len(ins) > 2 and ins[2] else a.get("max")
        return Node("clip", [ins[0]], out, node.name, dict(lo=_scalar(lo), hi=_scalar(hi)))
    if op in ("Max", "Min") and len(data) == 1:
        return Node("clip", data, out, node.name, dict(op=op))
    if op == "Add" and len(data) == 2:
        return Node("add", data, out, node.name)
    if op in ("Add", "Sub", "Mul", "Div") and len(data) == 1:
        const = next(consts[i] for i in ins if i in consts)
        return Node("affine", data, out, node.name, dict(kind=op, value=np.asarray(const, np.float64),
                                                         data_first=ins[0] == data[0]))
    if op == "Pad":
        return Node("pad", [ins[0]], out, node.name)
    if op in _RESHAPES:
        return Node("reshape", [ins[0]], out, node.name, dict(kind=op, perm=a.get("perm")))
    if op in ("GlobalAveragePool", "ReduceMean", "GlobalMaxPool", "ReduceMax"):
        return Node("pool", [ins[0]], out, node.name, dict(kind="max" if "Max" in op else "average"))
    if op == "AveragePool":  # TF-slim's head: a window, not the whole map
        return Node("pool", [ins[0]], out, node.name, dict(kind="window", kernel=tuple(a.get("kernel_shape", ()))))
    if op in ("Gemm", "MatMul") and len(data) == 1:
        w = consts.get(ins[1])
        if w is not None:
            w = np.asarray(w, np.float64)
            if op == "MatMul" or not a.get("transB", 0):
                w = w.T  # to (out, in)
            w = w * a.get("alpha", 1.0)
        bias = consts.get(ins[2]) if op == "Gemm" and len(ins) > 2 and ins[2] else None
        if bias is not None:
            bias = np.asarray(bias, np.float64) * a.get("beta", 1.0)
        return Node("dense", [ins[0]], out, node.name, dict(
            weight=w, bias=bias, weight_q=grids.get(ins[1]), bias_q=grids.get(ins[2]) if op == "Gemm" and len(ins) > 2 else None))
    if op == "Softmax":
        return Node("softmax", [ins[0]], out, node.name)
    if op == "Cast":
        return Node("cast", [ins[0]], out, node.name, dict(to=a.get("to")))
    if op in ("Resize", "Upsample"):  # (a resize of OTHER's input: graph.input_maps); nearest by default
        mode = a.get("mode", b"nearest")
        return Node("other", data, out, node.name, dict(
            kind=op, mode=mode.decode(errors="replace") if isinstance(mode, bytes) else str(mode)))
    return Node("other", data, out, node.name, dict(kind=op))


def _refuse_external(graph, path, TensorProto):
    """Refuse a tensor anywhere in the graph (initializers, sparse initializers, Constant
    attributes, subgraphs) whose data lives in another file: compare reads only the file given."""
    stack = [graph]
    while stack:
        g = stack.pop()
        tensors = list(g.initializer) + [s.values for s in g.sparse_initializer]
        for node in g.node:
            for a in node.attribute:
                tensors += [a.t] if a.HasField("t") else []
                tensors += list(a.tensors) + [s.values for s in a.sparse_tensors]
                tensors += [a.sparse_tensor.values] if a.HasField("sparse_tensor") else []
                stack += ([a.g] if a.HasField("g") else []) + list(a.graphs)
        for t in tensors:
            if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
                where = dict((e.key, e.value) for e in t.external_data).get("location", "")[:100]
                raise CompareError(f"{path!r} keeps tensor {t.name!r} in an external file ({where!r}); compare "
                                   "reads only the file given: save the model with its weights inside "
                                   "(torch.onnx.export(..., external_data=False), the dynamo exporter's "
                                   "default being a .data file beside it; or onnx.save(onnx.load(PATH), NEW_PATH))")


def read_onnx(path):
    onnx = require("onnx", "comparing an ONNX file", "onnx")
    ort = require("onnxruntime", "running an ONNX file", "onnx")
    from onnx import TensorProto, defs, helper, numpy_helper
    path = files.path_str(path)
    data = read_input(path, "ONNX file", MAX_MODEL_BYTES)
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CompareError(f"{path!r} is not an ONNX file onnx can read: {str(exc)[:200]}") from None
    _refuse_external(model.graph, path, TensorProto)
    if _inlined_nodes(model) > MAX_NODES:  # before ONNX Runtime is asked for every node's output
        raise CompareError(f"{path!r} has more than {MAX_NODES} nodes (its local functions inlined), more than "
                           "an ONNX graph of MobileNetV2 could need (a damaged or hostile file)")
    if len(model.functions):  # torch.onnx's dynamo exporter wraps modules in local functions
        try:
            from onnx import inliner
            model = inliner.inline_local_functions(model)
        except (ImportError, AttributeError):
            raise CompareError(f"{path!r} uses ONNX local functions: install onnx >= 1.16 to inline them") from None
    _check_schema(model, path, defs)
    graph = model.graph
    consts = _constants(graph, path, numpy_helper)
    grids = onnx_quant.dequantize_constants(graph, consts, helper)
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1:
        raise CompareError(f"{path!r} has {len(inputs)} inputs ({[i.name for i in inputs]}); "
                           "a MobileNetV2 takes one image batch")
    inp = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise CompareError(f"{path!r}: input {inp.name!r} has rank {len(dims)}, expected an image batch (rank 4)")
    layout, hw = image_input(dims, path, dims)
    collapsed, consumed = onnx_quant.collapse_dynamic(graph, consts, helper)
    nodes = [n for n in (collapsed.get(i) or (None if i in consumed else _normalize(node, consts, helper, grids))
                         for i, node in enumerate(graph.node)) if n is not None]
    for n in collapsed.values():  # a fixed batch size: run that many images at a time, a grid for each run
        n.attrs["dynamic_group"] = dims[0]
    ends = {n.output for n in collapsed.values()}
    nodes, on_grid, to_dequantize = onnx_quant.collapse_qdq(nodes)
    float_layers = {n.output: n for n in nodes if n.op in ("conv", "dense") and n.attrs.get("weight") is not None
                    and n.attrs.get("weight_q") is None}
    requantized = onnx_quant.runtime_weight_grids(model, ort, onnx, helper, numpy_helper, float_layers,
                                                  MAX_MODEL_BYTES) \
        if on_grid and float_layers else {}
    requantized = {name: r for name, r in requantized.items()  # the shapes the file gave (else not read)
                   if r[0].shape == np.shape(float_layers[name].attrs["weight"]) and
                   (r[2] is None) == (float_layers[name].attrs.get("bias") is None) and
                   (r[2] is None or r[2].shape == np.shape(float_layers[name].attrs["bias"]))}
    for name, (weight, wq, bias, bq) in requantized.items():  # OTHER's weights as ONNX Runtime runs them
        float_layers[name].attrs.update(weight=weight, weight_q=wq, bias=bias, bias_q=bq)
    nodes, float_rounded = onnx_quant.collapse_casts(nodes, TensorProto)
    qoperator = any(n.op_type in onnx_quant.QOPERATOR_OPS for n in graph.node)
    layouts = tensor_layouts(nodes, inp.name, layout)

    # A copy with every float intermediate tensor as an output (types from shape inference).
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(probe).graph.value_info
        types = {v.name: v.type.tensor_type.elem_type for v in inferred}
    except Exception:
        types = {}
    have = {o.name for o in probe.graph.output}
    # In a quantized graph a float tensor read only by a QuantizeLinear is one ONNX Runtime fuses
    # away (DQ -> Conv -> Q becomes QLinearConv): asking for it would make ORT run the float op.
    quantizes = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    for i, node in enumerate(graph.node):
        if i in consumed and node.output[0] not in ends:  # inside a dynamically quantized conv: no layer's
            continue
        wanted = node.op_type in _FLOAT_OPS or node.op_type in onnx_quant.QOPERATOR_OPS or (
            node.op_type in ("DequantizeLinear", "QuantizeLinear") and node.output and node.output[0] in on_grid)
        if not wanted:
            continue
        for name in node.output:
            if name and name not in have and name not in consts and name not in quantizes:
                kind = types.get(name, None if qoperator else TensorProto.FLOAT)  # unknown: int8 or float?
                if name in to_dequantize:
                    kind = types.get(name) or (TensorProto.INT8 if to_dequantize[name].qmin < 0 else TensorProto.UINT8)
                if kind == TensorProto.FLOAT or name in to_dequantize:
                    probe.graph.output.append(helper.make_tensor_value_info(name, kind, None))
                    have.add(name)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # no warning per initializer the probe leaves unused
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompareError(f"ONNX Runtime cannot load {path!r}: {exc}") from None
    names = [o.name for o in session.get_outputs()]

    batch = dims[0]  # a static batch size: run the input that many images at a time

    def run_one(feed):
        try:
            return session.run(names, {inp.name: feed})
        except Exception as exc:  # onnxruntime's own exception types
            raise CompareError(f"ONNX Runtime failed running {path!r} on input {list(feed.shape)}: {exc}") from None

    def run_all(x):
        feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x, np.float32)
        if not batch or len(feed) == batch or len(feed) % batch:
            return dict(zip(names, run_one(feed)))
        parts = [run_one(feed[i:i + batch]) for i in range(0, len(feed), batch)]
        return {n: np.concatenate([p[k] for p in parts]) for k, n in enumerate(names)
                if np.ndim(parts[0][k])}  # (a scalar of each run is no layer's tensor)

    def run(x):
        out = run_all(x)
        for name, grid in to_dequantize.items():  # QOperator's integer tensors, as float values
            if name in out and np.asarray(out[name]).dtype.kind in "iu":
                out[name] = grid.dequantize(out[name])
        return out

    other = OtherModel("onnx", path, nodes, layout, hw, "NCHW", runner=run)
    other.layouts = layouts
    other.fixed_batch = batch
    # an export's (x - mean) / std in its graph; a Resize of its input (the reference starts from its output)
    first = input_maps(other, inp.name)
    other.float_rounding = float_rounded or None
    if requantized:
        layers = "layer" if len(requantized) == 1 else "layers"
        other.runtime = (f"ONNX Runtime {ort.__version__}, whose optimizer gives {len(requantized)} float {layers} "
                         "between int8 tensors int8 weights of its own "
                         f"({', '.join(sorted(requantized)[:3])}{', ...' if len(requantized) > 3 else ''}): read from "
                         "the graph it optimizes")
    other.outputs = [o.name for o in graph.output]
    if collapsed:  # int8 weights, float activations rounded as the graph runs
        other.kind = "onnx (dynamic int8)"
    if on_grid:
        other.quant = on_grid
        # and the tensor it writes its rounded input to: run() returns it as float values, OTHER's side
        # where float32 rounds x / scale at a tie either way (as OpenVINO's reader does)
        other.input_quant, tensor = onnx_quant.input_rounding(nodes, first)
        other.input_quant_tensor = tensor if tensor in names else None
        other.kind = "onnx (int8)" if all(g.bits <= 8 for g in on_grid.values()) else "onnx (quantized)"
    return other

