"""Read an OpenVINO IR (``model.xml`` and the ``model.bin`` beside it) or an ``openvino.Model`` as
OTHER: its ops in the compare vocabulary, and OpenVINO's CPU plugin running a copy of it with
every op's output made a model output.

The CPU plugin runs in float32 (``INFERENCE_PRECISION_HINT``: on a CPU with AVX512_BF16 or AMX
it computes in bfloat16 by default) and one stream; the report says so.  Weights are read from
the Constant ops, float16 ones (``ov.save_model`` compresses to float16 by default: a Constant
f16, then a Convert to f32) as their float16 values.  A conv's bias (an Add of a per-channel
Constant after a Convolution or GroupConvolution) and the classifier's (after its MatMul) are
the node's own bias, as an ONNX Conv or Gemm carries it.

An int8 IR (``nncf.quantize``) is read as a QDQ ONNX graph is (onnx_quant.py): a FakeQuantize
of an activation whose input and output ranges are the same constants is a ``qdq`` node on its
grid ((hi - lo) / (levels - 1) apart, the zero point where lo lies), and a weight stored as
integers (Constant i8 / u8, Convert, Subtract of its zero point, Multiply by its scales) is read
dequantized, its conv or dense keeping that grid (``weight_q``) for quant.py's int8 reference.
"""
import os
import re
import types

import numpy as np

from mobilenetv2 import files
from mobilenetv2.tools.compare.errors import MAX_MODEL_BYTES, CompareError, read_input, require
from mobilenetv2.tools.compare.graph import Node, OtherModel, QParams, image_input, input_maps, tensor_layouts
from mobilenetv2.tools.compare.onnx_quant import collapse_casts, input_rounding

MAX_XML_BYTES = 64 << 20  # a MobileNetV2 IR's .xml is ~0.2 MB; its .bin holds the weights
MAX_XML_TAGS = 1 << 20    # and ~7,300 tags at alpha 0.35 (each a node OpenVINO's parser keeps, nested as deep)
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": "1"}
_TYPES = types.SimpleNamespace(BFLOAT16="bf16", FLOAT16="f16", FLOAT="f32")  # collapse_casts' type names
_RESHAPES = {"Transpose", "Reshape", "Squeeze", "Unsqueeze"}
_AFFINE = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Divide": "Div"}
_ARITHMETIC = {"Add": np.add, "Subtract": np.subtract, "Multiply": np.multiply, "Divide": np.divide}  # on constants
_ARRAY_TYPES = {"f16", "bf16", "f32", "f64", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "u64", "boolean"}
_INTEGERS = {"i8": np.int8, "u8": np.uint8, "i32": np.int32}  # an int8 IR's weights, biases
_POOLS = {"ReduceMean": "average", "ReduceMax": "max", "MaxPool": "max", "AvgPool": "window"}
_IR_ROOT = re.compile(rb"\A(\xef\xbb\xbf)?\s*(<\?xml[^>]*\?>\s*)?(<!--.*?-->\s*)*<net[\s>]", re.S)


def _message(exc):
    """The last line of an OpenVINO exception (the first ones name its C++ source files)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


_BIN_FAULT = "Incorrect weights in bin file"  # a Constant's offset + size past the .bin's end (OpenVINO 2026)
_XML_FAULT = re.compile(r"Error parsing|doesn't contain the operation|Cannot parse|Unable to read the model")


def _read_error(path, weights, message):
    """What OpenVINO's ``message`` says is wrong, naming the file at fault where it can be told:
    the .bin where a Constant lies past its end, the .xml where it does not parse or names an op or
    an attribute value OpenVINO does not know; both where OpenVINO does not say."""
    if _BIN_FAULT in message:
        return (f"OpenVINO cannot read the weights {weights!r} of the IR {path!r}: {message} (its Constants "
                "lie past the .bin's end: a .bin cut short or of another model?)")
    if _XML_FAULT.search(message):
        return f"OpenVINO cannot read the IR's .xml {path!r}: {message} (a damaged .xml, or one of another OpenVINO)"
    return f"OpenVINO cannot read the IR {path!r} with its weights {weights!r}: {message}"


def read_openvino(path):
    """OTHER from an IR's ``.xml`` path; its weights are the ``.bin`` of the same name beside it."""
    ov = require("openvino", "comparing an OpenVINO IR", "openvino")
    path = files.path_str(path)
    xml = read_input(path, "model .xml file", MAX_XML_BYTES)
    if not _IR_ROOT.match(xml[:4096]):
        raise CompareError(f"{path!r} is not an OpenVINO IR (an XML file whose root element is <net>); "
                           "write one with openvino.save_model(model, 'model.xml')")
    if xml.count(b"<") > MAX_XML_TAGS:  # bounds the elements OpenVINO would parse, and their depth
        raise CompareError(f"{path!r} holds {xml.count(b'<')} XML tags, more than the {MAX_XML_TAGS} an IR of "
                           "MobileNetV2 could need (a damaged or hostile file)")
    weights = os.path.splitext(path)[0] + ".bin"
    if not os.path.lexists(weights):
        raise CompareError(f"OpenVINO IR {path!r} has no weights file {weights!r} beside it: keep the .bin "
                           "that openvino.save_model wrote with the .xml, under the same name")
    try:  # the file given is the .xml: its .bin must not make us read a file elsewhere
        files.folder_member(os.path.dirname(path) or ".", os.path.basename(weights))
    except files.OutsideFolder as exc:
        raise CompareError(str(exc)) from None
    data = read_input(weights, "weights .bin file", MAX_MODEL_BYTES)
    try:
        model = ov.Core().read_model(xml, ov.Tensor(np.frombuffer(data, np.uint8)) if data
                                     else ov.Tensor(ov.Type.u8, [0]))
    except Exception as exc:  # OpenVINO raises RuntimeError (and friends) with its C++ trace
        raise CompareError(_read_error(path, weights, _message(exc))) from None
    try:
        return read_model(model, path)
    except UnicodeDecodeError as exc:  # pybind11 decodes every name OpenVINO hands Python as UTF-8
        raise CompareError(f"{path!r} names an op in bytes that are not UTF-8 ({exc.reason}; a damaged "
                           "file)") from None


def read_model(model, source=None):
    """OTHER from an ``openvino.Model`` (left as it is: a clone of it is run)."""
    ov = require("openvino", "comparing an OpenVINO model", "openvino")
    source = source or f"openvino.Model {model.get_friendly_name()!r}"
    model = model.clone()
    params = model.get_parameters()
    if len(params) != 1:
        raise CompareError(f"{source!r} has {len(params)} inputs ({[p.get_friendly_name() for p in params]}); "
                           "a MobileNetV2 takes one image batch")
    etype = params[0].get_element_type().get_type_name()
    if etype not in ("f32", "f64"):  # OpenVINO would cast (or round) the float32 images compare feeds, silently
        raise CompareError(f"{source!r}: input {params[0].get_friendly_name()!r} is {etype}, not float32 (a "
                           "PrePostProcessor's input().tensor().set_element_type?); compare feeds float32 "
                           "images in [-1, 1]: give the model without that step")
    shape = params[0].get_partial_shape()
    dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
    if len(dims) != 4:
        raise CompareError(f"{source!r}: input {params[0].get_friendly_name()!r} has shape {shape}, "
                           "expected an image batch (rank 4)")
    layout, hw = image_input(dims, source, shape)
    names, taken, consts, ports, nodes = {}, {}, {}, {}, []
    integers, grids = {}, {}  # constants holding integers: (dtype, zero point); dequantized weights: QParams
    compressed = False

    def key(output):  # a tensor's name: its op's friendly name (unique), ':k' for its k-th output
        node, k = output.get_node(), output.get_index()
        if node.get_name() not in names:
            names[node.get_name()] = _unique(node.get_friendly_name(), taken)
        base = names[node.get_name()]
        return base if k == 0 else f"{base}:{k}"

    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        ins = [key(i.get_source_output()) for i in op.inputs()]
        out = key(op.output(0))
        if kind == "Constant":
            value = _constant(op)
            if value is not None:  # else a type NumPy cannot hold: a computed tensor to the reader
                consts[out] = value
            continue
        if ins and all(i in consts for i in ins):  # a computation on constants: a weight's decompression
            value = _on_constants(op, [consts[i] for i in ins])
            if value is not None:
                consts[out] = value
                compressed |= kind == "Convert" and op.input(0).get_element_type().get_type_name() == "f16"
                _dequantized(op, kind, ins, out, consts, integers, grids)
            continue
        if kind in ("Parameter", "Result"):
            continue
        ports[out] = op.output(0)
        nodes.append(_normalize(op, kind, ins, out, consts, grids))
    nodes, float_rounded = collapse_casts(_fold_biases(nodes), _TYPES)
    input_name = key(params[0].output(0))
    outputs = [key(r.input_value(0)) for r in model.get_results()]
    on_grid = {n.output: n.attrs["grid"] for n in nodes if n.op == "qdq" and n.attrs.get("grid") is not None}

    deployed = model.clone()  # as the user runs it: its own outputs only, so the plugin fuses as it does then
    wanted = [ports[n.output] for n in nodes if n.output in ports
              and ports[n.output].get_element_type().is_real() and n.output not in outputs]
    model.add_outputs(wanted)
    results = [key(r.input_value(0)) for r in model.get_results()]
    request = _compile(ov, model, source).create_infer_request()
    batch = dims[0]  # a static batch size: run the input that many images at a time

    def run(x):
        return dict(zip(results, _infer(request, x, layout, batch, source)))

    other = OtherModel("openvino", source, nodes, layout, hw, "NCHW", runner=run)
    other.layouts = tensor_layouts(nodes, input_name, layout)
    # what the reference's input is: OTHER's resized tensor where it resizes (a PrePostProcessor's resize)
    first = input_maps(other, input_name)
    other.float_rounding = float_rounded or None
    other.outputs = outputs
    other.deployed = deployed_runner(ov, deployed, outputs, layout, batch, source)
    other.fixed_batch = batch
    if on_grid:
        other.quant = on_grid
        other.input_quant, other.input_quant_tensor = input_rounding(nodes, first)
        other.kind = "openvino (int8)" if all(g.bits <= 8 for g in on_grid.values()) else "openvino (quantized)"
    other.runtime = (f"OpenVINO {ov.get_version().split('-')[0]} CPU plugin, inference precision f32 "
                     "(INFERENCE_PRECISION_HINT), 1 stream" +
                     ("; weights stored as float16 in the model, decompressed to f32" if compressed else "") +
                     # measured with 2026.4.1: its convolutions run u8 without the added outputs, f32 with them
                     ("; int8: with every layer's output requested the plugin runs the FakeQuantize ops and "
                      "convolutions in f32 arithmetic, not the fused int8 kernels it runs the IR with as it is "
                      "(its final output as it is: the deployed line)"
                      if on_grid else ""))
    return other


def _compile(ov, model, source):
    try:
        return ov.Core().compile_model(model, "CPU", CONFIG)
    except Exception as exc:
        raise CompareError(f"OpenVINO's CPU plugin cannot compile {source!r}: {_message(exc)}") from None


def _infer(request, x, layout, batch, source):
    """The compiled model's outputs, in its order, for the NHWC batch ``x`` (fed in OTHER's layout,
    ``batch`` images at a time where the model's batch size is static and divides ``x``'s)."""
    def run_one(feed):
        try:
            return request.infer({0: feed}).to_tuple()
        except Exception as exc:
            raise CompareError(f"OpenVINO failed running {source!r} on input {list(feed.shape)}: "
                               f"{_message(exc)}") from None

    feed = np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x, np.float32)
    if not batch or len(feed) == batch or len(feed) % batch:
        parts = [run_one(feed)]
    else:
        parts = [run_one(feed[i:i + batch]) for i in range(0, len(feed), batch)]
    return [np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(len(parts[0]))]


def deployed_runner(ov, model, outputs, layout, batch, source):
    """OTHER as deployed: ``model`` compiled as it is, with the same settings (compiled on first
    use): {output tensor: array} for an NHWC batch.  With every op's output requested the CPU
    plugin cannot fuse what it fuses here (an int8 IR's convolutions run in f32 arithmetic there,
    u8 here: measured with 2026.4.1), so compare checks this run's final output too."""
    compiled = []

    def run(x):
        if not compiled:
            compiled.append(_compile(ov, model, source).create_infer_request())
        return dict(zip(outputs, _infer(compiled[0], x, layout, batch, source)))
    return run


def _unique(name, taken):
    """``name``, or ``name#2``, ``name#3``, ... the first not given yet; ``taken`` holds each name
    given with the number its next duplicate tries (so an IR of many ops of one name is read in
    linear time: a scan of every name given, per op, took minutes at 40000 ops)."""
    unique, i = name, taken.get(name, 2)
    while unique in taken:
        unique, i = f"{name}#{i}", i + 1
    taken[name] = i
    taken.setdefault(unique, 2)
    return unique


def _constant(op):
    """A Constant's value: float64 for a floating type (bfloat16 widened bit by bit), integers as
    stored; None for the types OpenVINO hands NumPy packed or as raw bytes (u4, i4, nf4, f8, u1,
    string: read as they are they would be other values of another shape)."""
    t = op.get_element_type().get_type_name()
    if t not in _ARRAY_TYPES:
        return None
    value = np.array(op.get_data())
    if t == "bf16":  # get_data gives bfloat16's bits in a float16 array
        value = (value.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return value.astype(np.float64) if op.get_element_type().is_real() else value


def _on_constants(op, values):
    """What a Convert, Reshape-like op, Transpose or arithmetic of constants (an int8 weight's
    dequantization) computes, or None."""
    kind = op.get_type_name()
    if not op.get_output_partial_shape(0).is_static:
        return None
    if kind == "Convert":
        if not op.get_output_element_type(0).is_real():
            return None
        return np.asarray(values[0], np.float64)
    if kind == "Transpose":
        return np.transpose(values[0], np.asarray(values[1], np.int64))
    if kind in _RESHAPES:
        return np.reshape(values[0], list(op.get_output_shape(0)))
    if kind in _ARITHMETIC and op.get_output_element_type(0).is_real():
        return _ARITHMETIC[kind](*(np.asarray(v, np.float64) for v in values))
    return None


def _per_channel(v):
    """A scale or zero point as a scalar, or a vector where it varies along one axis."""
    v = np.asarray(v, np.float64)
    return v.reshape(-1) if v.size > 1 else v.reshape(())


def _dequantized(op, kind, ins, out, consts, integers, grids):
    """Follow an integer weight through its dequantization: a Convert of an i8 / u8 (a bias:
    i32) Constant (``integers``: its dtype, zero point 0), a Subtract of its zero point, then the
    Multiply by its scales gives the dequantized weight's grid (``grids``, per output channel or
    tensor), kept through a Reshape or Transpose that keeps the output channels first."""
    if kind == "Convert" and op.input(0).get_element_type().get_type_name() in _INTEGERS:
        integers[out] = (_INTEGERS[op.input(0).get_element_type().get_type_name()], 0)
    elif kind == "Subtract" and ins[0] in integers:
        integers[out] = (integers[ins[0]][0], consts[ins[1]])
    elif kind == "Multiply" and any(i in integers for i in ins):
        q, s = ins if ins[0] in integers else ins[::-1]
        dtype, zp = integers[q]
        scale, zp = np.broadcast_arrays(np.asarray(consts[s], np.float64), np.asarray(zp, np.float64))
        if np.all(zp == np.round(zp)) and np.all(scale > 0):
            grids[out] = QParams.of(_per_channel(scale), _per_channel(zp), dtype, 0)
    elif kind in _RESHAPES and ins[0] in grids and np.size(grids[ins[0]].scale) in (1, consts[out].shape[0],
                                                                                    consts[out].size):
        grids[out] = grids[ins[0]]


def _fake_quantize(op, ins, consts):
    """The grid of a FakeQuantize whose input and output ranges are the same constants (what
    nncf.quantize writes): ``levels`` values from lo to hi, (q - zp) * scale with q in
    [0, levels - 1], its zero point an integer; None for any other."""
    ranges = [consts.get(i) for i in ins[1:5]]
    if any(r is None for r in ranges) or len(ranges) != 4:
        return None
    lo, hi, out_lo, out_hi = np.broadcast_arrays(*(np.asarray(r, np.float64) for r in ranges))
    if not (np.array_equal(lo, out_lo) and np.array_equal(hi, out_hi)):
        return None
    levels = int(op.get_attributes()["levels"])
    with np.errstate(all="ignore"):
        scale = (hi - lo) / (levels - 1)
        zp = -lo / scale
    if not (np.all(scale > 0) and np.all(np.isfinite(scale)) and np.all(np.abs(zp - np.round(zp)) < 1e-3)):
        return None
    return QParams(_per_channel(scale), _per_channel(np.round(zp)).astype(np.int64), 0, levels - 1,
                   fq_range=(_per_channel(lo), _per_channel(hi)))


def _normalize(op, kind, ins, out, consts, grids):
    """One OpenVINO op as a compare Node."""
    a = op.get_attributes()
    name = op.get_friendly_name()
    data = [i for i in ins if i not in consts]
    if kind in ("Convolution", "GroupConvolution"):
        w = consts.get(ins[1])
        group = 1
        if w is not None and kind == "GroupConvolution":  # [G, O/G, I/G, kh, kw] -> OIHW
            group = w.shape[0]
            w = w.reshape((w.shape[0] * w.shape[1],) + w.shape[2:])
        begin, end = list(a.get("pads_begin", (0, 0))), list(a.get("pads_end", (0, 0)))
        return Node("conv", [ins[0]], out, name, dict(
            weight=w, bias=None, group=group, stride=tuple(a.get("strides", (1, 1))), pads=begin + end,
            weight_q=grids.get(ins[1])))
    if kind == "BatchNormInference":  # opset1 reads (gamma, beta, data, ...), opset5 (data, gamma, ...)
        x = ins[2] if op.get_type_info().version_id == "opset1" else ins[0]
        g, b, m, v = (consts.get(i) for i in ins if i != x)  # None where computed, not stored
        return Node("bn", [x], out, name, dict(gamma=g, beta=b, mean=m, var=v, eps=a.get("epsilon", 1e-5)))
    if kind == "Relu":
        return Node("relu", data, out, name)
    if kind == "Clamp":
        return Node("clip", data, out, name, dict(lo=float(a["min"]), hi=float(a["max"])))
    if kind in ("Maximum", "Minimum") and len(data) == 1:
        return Node("clip", data, out, name, dict(op=kind[:3]))
    if kind == "Add" and len(data) == 2:
        return Node("add", data, out, name)
    if kind in _AFFINE and len(data) == 1:
        const = next(consts[i] for i in ins if i in consts)
        grid = next((grids[i] for i in ins if i in grids), None)  # an int32 bias's
        return Node("affine", data, out, name, dict(kind=_AFFINE[kind], value=np.asarray(const, np.float64),
                                                     data_first=ins[0] == data[0], grid=grid))
    if kind == "Pad":
        return Node("pad", [ins[0]], out, name)
    if kind in _RESHAPES:
        perm = consts.get(ins[1]) if kind == "Transpose" and len(ins) > 1 else None
        return Node("reshape", [ins[0]], out, name, dict(kind=kind, perm=None if perm is None else perm.tolist()))
    if kind == "Convert":
        return Node("cast", [ins[0]], out, name, dict(to=op.get_output_element_type(0).get_type_name()))
    if kind in _POOLS:
        return Node("pool", [ins[0]], out, name, dict(kind=_POOLS[kind], kernel=tuple(a.get("kernel", ()))))
    if kind == "MatMul" and len(data) == 1 and ins[1] in consts:
        w = consts[ins[1]]
        return Node("dense", data, out, name, dict(weight=w if a.get("transpose_b") else w.T, bias=None,
                                                    weight_q=grids.get(ins[1])))
    if kind == "FakeQuantize" and ins[0] in data:
        grid = _fake_quantize(op, ins, consts)
        if grid is not None:
            return Node("qdq", [ins[0]], out, name, dict(grid=grid))
    if kind == "Softmax":
        return Node("softmax", data, out, name)
    if kind == "Interpolate":  # (a resize of OTHER's input: graph.input_maps)
        return Node("other", data, out, name, dict(kind=kind, mode=str(a.get("mode", ""))))
    return Node("other", data, out, name, dict(kind=kind))


def _fold_biases(nodes):
    """``nodes`` with each conv's or dense's Add of a per-channel constant (its only reader) made
    that node's bias: OpenVINO writes a conv's bias as an Add after it."""
    readers = {}
    for n in nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n)
    out, folded = [], set()
    for n in nodes:
        if id(n) in folded:
            continue
        nxt = readers.get(n.output, [])
        w = n.attrs.get("weight")
        if (n.op in ("conv", "dense") and w is not None and len(nxt) == 1 and nxt[0].op == "affine"
                and nxt[0].attrs["kind"] == "Add" and nxt[0].attrs["value"].size == w.shape[0]):
            folded.add(id(nxt[0]))
            n = Node(n.op, n.inputs, nxt[0].output, n.name, dict(n.attrs, bias=nxt[0].attrs["value"].reshape(-1),
                                                                 bias_q=nxt[0].attrs["grid"]))
        out.append(n)
    return out
