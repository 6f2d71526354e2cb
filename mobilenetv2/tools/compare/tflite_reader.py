"""Read a ``.tflite`` file as OTHER: LiteRT's interpreter with every tensor preserved (and no
delegate, which would hide the intermediate tensors), its ops in the compare vocabulary.

A float16 model (TensorFlow's converter with ``target_spec.supported_types=[tf.float16]``) stores
each weight and bias as a float16 constant that a DEQUANTIZE op turns into the float32 tensor the
conv reads: that weight is read as the float16 constant's values (as an OpenVINO IR's compressed
Constant f16 + Convert is), the DEQUANTIZE is no node of OTHER's, and the ``runs on`` line says
which weights are stored so.  The same for int8 weights a DEQUANTIZE turns into float32
(ai-edge-quantizer's weight-only recipe), each keeping its grid.

An ADD, SUB, MUL or DIV by a constant the file stores is an ``affine`` node (as the ONNX and OpenVINO
readers write theirs), so that a map the model applies to its own input (``(x - 127.5) / 127.5``, a
mean/std baked in by the converter) is read as OTHER's ``input_affine`` (graph.input_maps).
"""

import numpy as np

from mobilenetv2 import files
from mobilenetv2.tools.compare.errors import MAX_MODEL_BYTES, CompareError, read_input, require
from mobilenetv2.tools.compare.graph import RESIZE_OPS, Node, OtherModel, QParams, input_maps

_OPS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "conv", "PAD": "pad", "MEAN": "pool", "REDUCE_MAX": "pool",
        "AVERAGE_POOL_2D": "pool",
        "FULLY_CONNECTED": "dense", "SOFTMAX": "softmax", "RESHAPE": "reshape", "RELU6": "clip",
        "RELU": "relu", "TRANSPOSE": "reshape", "QUANTIZE": "quant", "DEQUANTIZE": "dequant"}
_ARITHMETIC = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div"}  # by a constant: an ``affine`` node


def _grid(t):
    """The QParams of an integer tensor (int8 activations and weights, int32 biases), or None."""
    q = t.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float64)
    if np.dtype(t["dtype"]).kind not in "iu" or scales.size == 0:
        return None
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        raise CompareError(f"tensor {t['name'][:80]!r} has a zero or non-finite quantization scale")
    zp = np.asarray(q.get("zero_points", []), np.int64)
    grid = QParams.of(scales if scales.size > 1 else scales[0], zp if zp.size > 1 else (zp[0] if zp.size else None),
                      np.dtype(t["dtype"]), int(q.get("quantized_dimension", 0)))
    return grid


def _numeric(t):
    """Whether LiteRT hands the tensor ``t`` to NumPy as numbers: get_tensor on a STRING tensor
    parses its bytes as string offsets (a constant of float bytes typed STRING crashed it)."""
    return np.dtype(t["dtype"]).kind in "biuf"


def _float_or_quantized(t, grid, path):
    """Refuse a conv's or dense's weight of integers without the scales that make them values
    (they would be read, and used as the reference's weights, as the integers themselves)."""
    if np.dtype(t["dtype"]).kind != "f" and grid is None:
        raise CompareError(f"{path!r}: weight tensor {t['name'][:80]!r} is {np.dtype(t['dtype'])} with no "
                           "quantization parameters (a damaged file)")


def _stored(data):
    """The indices of the main graph's tensors whose values the file stores (a buffer holding
    data; buffer 0 is the empty one by the schema's convention).  A weight of another is computed
    at run time: before a run LiteRT hands back whatever memory it allocated for it."""
    from ai_edge_litert import schema_py_generated as schema  # (LiteRT has verified the file)
    model = schema.Model.GetRootAs(data, 0)
    graph, n = model.Subgraphs(0), model.BuffersLength()
    out = set()
    for i in range(graph.TensorsLength()):
        b = graph.Tensors(i).Buffer()
        if 0 < b < n and (model.Buffers(b).DataLength() or model.Buffers(b).Offset() > 1):
            out.add(i)
    return out


def _preset(data):
    """The indices of the main graph's tensors no op has to write: constants (a buffer of their
    own, even an empty one) and variables (state an op keeps between runs)."""
    from ai_edge_litert import schema_py_generated as schema
    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    return {i for i in range(graph.TensorsLength()) if graph.Tensors(i).IsVariable() or graph.Tensors(i).Buffer() > 0}


def _read_before_written(ops, inputs, preset, details, path):
    """Refuse an op that reads a tensor no earlier op writes, that is no input, constant or
    variable (a cycle: op 0 reading op 3's output): LiteRT runs it on memory nothing wrote.  (A
    conv's or dense layer's weight and bias are judged as weights: read_tflite's ``computed``.)"""
    written = {int(t["index"]) for t in inputs} | preset
    for k, op in enumerate(ops):
        data = op["inputs"][:1] if _OPS.get(op["op_name"]) in ("conv", "dense") else op["inputs"]
        for i in (int(i) for i in data):
            if i >= 0 and i not in written:
                raise CompareError(f"{path!r}: op {k} ({op['op_name']}) reads tensor "
                                   f"{details[i]['name'][:80]!r} before any op writes it (a cycle in the "
                                   "graph, or a damaged file)")
        written.update(int(i) for i in op["outputs"])


def _fused_arithmetic(data):
    """The indices of the main graph's ADD, SUB, MUL and DIV ops that fuse an activation (their
    options' fused_activation_function is not NONE): no affine map, even by a constant."""
    from ai_edge_litert import schema_py_generated as schema
    model = schema.Model.GetRootAs(data, 0)
    graph, out = model.Subgraphs(0), set()
    kinds = {getattr(schema.BuiltinOptions, f"{k}Options"): getattr(schema, f"{k}Options")
             for k in ("Add", "Sub", "Mul", "Div")}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        table = op.BuiltinOptions()
        if op.BuiltinOptionsType() in kinds and table is not None:
            options = kinds[op.BuiltinOptionsType()]()
            options.Init(table.Bytes, table.Pos)
            if options.FusedActivationFunction() != schema.ActivationFunctionType.NONE:
                out.add(i)
    return out


def _asymmetric_fc(data):
    """The indices of the main graph's FULLY_CONNECTED ops whose options ask a hybrid kernel to
    quantize its float input asymmetrically (``asymmetric_quantize_inputs``)."""
    from ai_edge_litert import schema_py_generated as schema
    model = schema.Model.GetRootAs(data, 0)
    graph, out = model.Subgraphs(0), set()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        table = op.BuiltinOptions()
        if op.BuiltinOptionsType() == schema.BuiltinOptions.FullyConnectedOptions and table is not None:
            options = schema.FullyConnectedOptions()
            options.Init(table.Bytes, table.Pos)
            if options.AsymmetricQuantizeInputs():
                out.add(i)
    return out


def _dynamic_input(op_name, index, weight_grid, asymmetric_fc):
    """How LiteRT's hybrid kernel (float input, int8 weights read as they are stored: dynamic
    range quantization) rounds each image's input onto int8 before its integer arithmetic:
    'asymmetric' (the range [min(0, min x), max(0, max x)] over 255 steps, a zero point) for a
    depthwise conv and a conv with per-channel scales, 'symmetric' (max |x| / 127) for a conv with
    one scale, and for a dense layer as its options say."""
    if op_name == "DEPTHWISE_CONV_2D":
        return "asymmetric"
    if op_name == "CONV_2D":
        return "asymmetric" if np.unique(np.asarray(weight_grid.scale)).size > 1 else "symmetric"
    return "asymmetric" if index in asymmetric_fc else "symmetric"


def _decompressed_sources(ops, details, stored, grids):
    """{tensor: the constant it is the DEQUANTIZE of}, for each DEQUANTIZE of a stored float16
    tensor (a float16 model's weights and biases, dequantized to float32 at run time) or of a
    stored integer tensor on a grid (int8 weights dequantized at run time: ai-edge-quantizer's
    weight_only_wi8_afp32, the computation in float)."""
    out = {}
    for op in ops:
        if op["op_name"] == "DEQUANTIZE" and len(op["inputs"]) == 1:
            src = int(op["inputs"][0])
            dtype = np.dtype(details[src]["dtype"])
            if src in stored and (dtype == np.float16 or (dtype.kind in "iu" and grids.get(src) is not None)):
                out[int(op["outputs"][0])] = src
    return out


def read_tflite(path):
    lite = require("ai_edge_litert.interpreter", "comparing a .tflite file", "litert")
    path = files.path_str(path)
    data = read_input(path, ".tflite file", MAX_MODEL_BYTES)
    try:
        interp = lite.Interpreter(
            model_content=data, experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        details = {t["index"]: t for t in interp.get_tensor_details()}  # (names decoded: UTF-8 or a ValueError)
        inputs, ops = interp.get_input_details(), interp._get_ops_details()
    except (ValueError, RuntimeError) as exc:
        raise CompareError(f"LiteRT cannot load {path!r}: {exc}") from None
    if len(inputs) != 1:
        raise CompareError(f"{path!r} has {len(inputs)} inputs ({[t['name'][:40] for t in inputs[:8]]}); "
                           "a MobileNetV2 takes one image batch")
    (inp,) = inputs
    grids = {i: _grid(t) for i, t in details.items()}
    in_grid = grids.get(int(inp["index"]))
    if np.dtype(inp["dtype"]).kind != "f" and in_grid is None:
        raise CompareError(f"{path!r} takes {np.dtype(inp['dtype'])} input with no quantization parameters; "
                           "compare feeds float images")
    if len(inp["shape"]) != 4 or inp["shape"][3] != 3:
        raise CompareError(f"{path!r}: input shape {list(inp['shape'])} is not an NHWC image batch")
    consts, stored = {}, _stored(data)
    _read_before_written(ops, inputs, _preset(data), details, path)
    halves = _decompressed_sources(ops, details, stored, grids)
    fused, asymmetric_fc = _fused_arithmetic(data), _asymmetric_fc(data)
    hybrid = {}  # mode -> convolution and dense layers quantizing their float input at run time
    weighted, halved = 0, {}  # convs and dense layers; {type: those whose weight is a constant of it, dequantized}

    def const(index):
        if index < 0 or not _numeric(details[index]):
            return None
        if index not in consts:
            try:
                value = np.array(interp.get_tensor(index))
                consts[index] = (grids[index].dequantize(value) if grids.get(index) is not None
                                 else np.asarray(value, np.float64))
            except ValueError:
                consts[index] = None
        return consts[index]

    nodes = []
    for k, op in enumerate(ops):
        kind = _OPS.get(op["op_name"], "other")
        ins = [int(i) for i in op["inputs"]]
        out = str(int(op["outputs"][0]))
        name = details[int(op["outputs"][0])]["name"]
        if int(out) in halves:  # a weight's decompression, read through by its conv or dense
            continue
        if op["op_name"] in _ARITHMETIC:
            nodes.append(_arithmetic(op, ins, out, name, stored, const, fused))
            continue
        if kind in ("conv", "dense"):
            weighted += 1
            dynamic = None
            if ins[1] not in halves and grids.get(ins[1]) is not None and ins[0] in details and \
                    np.dtype(details[ins[0]]["dtype"]).kind == "f":
                dynamic = _dynamic_input(op["op_name"], op["index"], grids[ins[1]], asymmetric_fc)
                hybrid[dynamic] = hybrid.get(dynamic, 0) + 1
            if ins[1] in halves:
                kind_of = np.dtype(details[halves[ins[1]]]["dtype"]).name
                halved[kind_of] = halved.get(kind_of, 0) + 1
            ins[1:3] = [halves.get(i, i) for i in ins[1:3]]  # weight and bias dequantized at run time: their stored values
            _float_or_quantized(details[ins[1]], grids.get(ins[1]), path)
            bi = ins[2] if len(ins) > 2 and ins[2] >= 0 else None
            computed = next((i for i in (ins[1], bi) if i is not None and i not in stored), None)
            # weights computed at run time are not read (None: compare's 'not stored'), the bias with them
            w, b = (None, None) if computed is not None else (const(ins[1]), None if bi is None else const(bi))
            wq, bq = (None, None) if computed is not None else (grids.get(ins[1]), grids.get(bi))
            attrs = dict(weight=w, bias=b, weight_q=wq, bias_q=bq, dynamic=dynamic)
            if computed is not None:
                attrs["computed"] = (f"op {k} ({op['op_name']} {name[:80]!r}) reads tensor "
                                     f"{details[computed]['name'][:80]!r}, which the file does not store")
        if kind == "conv":
            shape = details[ins[1]]["shape"]
            if op["op_name"] == "DEPTHWISE_CONV_2D":  # (1, KH, KW, C) -> (C, 1, KH, KW)
                attrs["weight"], attrs["group"] = None if w is None else w.transpose(3, 0, 1, 2), int(shape[3])
            else:  # (O, KH, KW, I) -> OIHW
                attrs["weight"], attrs["group"] = None if w is None else w.transpose(0, 3, 1, 2), 1
            nodes.append(Node("conv", [str(ins[0])], out, name, attrs))
        elif kind == "dense":
            nodes.append(Node("dense", [str(ins[0])], out, name, attrs))
        elif kind == "quant":
            nodes.append(Node("quant", [str(ins[0])], out, name, dict(grid=grids.get(int(out)))))
        elif kind == "pool":
            pooling = {"REDUCE_MAX": "max", "AVERAGE_POOL_2D": "window"}.get(op["op_name"], "average")
            nodes.append(Node("pool", [str(ins[0])], out, name, dict(kind=pooling)))
        else:  # a RESIZE_* op named by its kind (a resize of OTHER's input: below)
            nodes.append(Node(kind, [str(ins[0])], out, name,
                              dict(kind=op["op_name"]) if op["op_name"] in RESIZE_OPS else {}))
    hw = (int(inp["shape"][1]), int(inp["shape"][2]))

    def run(x):
        try:
            if x.shape[0] != inp["shape"][0]:
                interp.resize_tensor_input(inp["index"], list(x.shape))
                interp.allocate_tensors()
            feed = np.ascontiguousarray(x, np.float32)
            if np.dtype(inp["dtype"]).kind != "f":  # an int8 input: the image rounded onto its grid
                s, z = np.float32(in_grid.scale), in_grid.zero_point
                feed = np.clip(np.round(feed / s) + z, in_grid.qmin, in_grid.qmax).astype(inp["dtype"])
            interp.set_tensor(inp["index"], feed)
            interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise CompareError(f"LiteRT failed running {path!r} on input {list(x.shape)}: {exc}") from None
        out = {}
        for n in nodes:
            if not _numeric(details[int(n.output)]):
                continue
            value = np.array(interp.get_tensor(int(n.output)))
            grid = grids.get(int(n.output))
            out[n.output] = grid.dequantize(value) if grid is not None and value.dtype.kind in "iu" else value
        return out

    other = OtherModel("tflite", path, nodes, "NHWC", hw, "NHWC", runner=run, fused_activations=True)
    other.outputs = [str(int(d["index"])) for d in interp.get_output_details()]
    other.layouts = {str(i): "NHWC" for i, t in details.items() if len(t["shape"]) == 4}
    # OTHER's own map of its input ((x - 127.5) / 127.5, a mean/std: its MUL/SUB/ADD/DIV by constants) and
    # a RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR of it (the reference starts from its output), as for ONNX
    input_name = str(int(inp["index"]))
    first = input_maps(other, input_name, resize=in_grid is None)  # an int8 input's own resize is not undone
    stored_as = "; ".join(
        ("weights" if n == weighted else f"the weights of {n} of its {weighted} convolution and dense layers") +
        f" stored as {kind} in the model, dequantized to float32" for kind, n in sorted(halved.items()))
    dynamic = "; ".join(
        f"{n} of its {weighted} convolution and dense layers with int8 weights quantize their float input per "
        f"image at run time ({mode}: hybrid kernels, dynamic range quantization)" for mode, n in sorted(hybrid.items()))
    other.runtime = (f"LiteRT {_version()} interpreter, built-in kernels without delegates (no XNNPACK)" +
                     "".join(f"; {t}" for t in (stored_as, dynamic) if t))
    if hybrid:  # int8 weights, float activations
        other.kind = "tflite (dynamic int8)"
    on_grid = {n.output: grids[int(n.output)] for n in nodes if grids.get(int(n.output)) is not None}
    if on_grid:  # an int8 model: its activations lie on these grids
        from mobilenetv2.tools.compare.onnx_quant import input_grid
        other.quant = on_grid
        other.kind = "tflite (int8)" if all(g.bits <= 8 for g in on_grid.values()) else "tflite (quantized)"
        other.input_quant = in_grid or input_grid(nodes, first)
        floats = sum(n.op in ("conv", "dense") and n.attrs.get("weight") is not None and
                     n.attrs.get("weight_q") is None for n in nodes)
        if floats:  # left out of quantization: float weights, a QUANTIZE after (and DEQUANTIZE before)
            other.runtime += (f"; {floats} of its {weighted} convolution and dense layers left in float "
                              "(float32 weights, computed in float; a QUANTIZE puts the output on the next "
                              "layer's int8 grid)")
    return other


def _arithmetic(op, ins, out, name, stored, const, fused):
    """The node of an ADD, SUB, MUL or DIV: ``affine`` (``kind``, ``value``, ``data_first``: as the
    ONNX and OpenVINO readers write them) where one operand is a constant the file stores and the op
    fuses no activation; an ADD of two computed tensors is ``add`` (a residual), anything else
    ``other``."""
    data = [i for i in ins if i not in stored]
    value = None if len(ins) != 2 or len(data) != 1 else const(next(i for i in ins if i in stored))
    if value is not None and op["index"] not in fused:
        return Node("affine", [str(data[0])], out, name, dict(kind=_ARITHMETIC[op["op_name"]], value=value,
                                                               data_first=ins[0] == data[0]))
    if op["op_name"] == "ADD" and len(data) == 2:
        return Node("add", [str(i) for i in ins], out, name)
    return Node("other", [str(i) for i in data], out, name, dict(kind=op["op_name"]))


def _version():
    import ai_edge_litert
    return getattr(ai_edge_litert, "__version__", "(version unknown)")
