"""Read a ``.tflite`` file as OTHER: LiteRT's interpreter with every tensor preserved (and no
delegate, which would hide the intermediate tensors), its ops in the compare vocabulary."""
import os

import numpy as np

from mobilenetv2.tools.compare.errors import MAX_MODEL_BYTES, CompareError, read_input, require
from mobilenetv2.tools.compare.graph import Node, OtherModel

_OPS = {"CONV_2D": "conv", "DEPTHWISE_CONV_2D": "conv", "ADD": "add", "PAD": "pad", "MEAN": "pool",
        "FULLY_CONNECTED": "dense", "SOFTMAX": "softmax", "RESHAPE": "reshape", "RELU6": "clip",
        "RELU": "relu", "TRANSPOSE": "reshape", "MUL": "affine", "SUB": "affine"}


def read_tflite(path):
    lite = require("ai_edge_litert.interpreter", "comparing a .tflite file", "litert")
    path = os.fsdecode(path)
    data = read_input(path, ".tflite file", MAX_MODEL_BYTES)
    try:
        interp = lite.Interpreter(
            model_content=data, experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise CompareError(f"LiteRT cannot load {path!r}: {exc}") from None
    details = {t["index"]: t for t in interp.get_tensor_details()}
    (inp,) = interp.get_input_details()
    if np.dtype(inp["dtype"]).kind != "f" or any(
            np.dtype(t["dtype"]).kind in "iu" and t.get("quantization", (0.0, 0))[0] for t in details.values()):
        raise CompareError(f"{path!r} is a quantized model (integer tensors); compare checks float models: "
                           "compare the float model it was quantized from")
    if len(inp["shape"]) != 4 or inp["shape"][3] != 3:
        raise CompareError(f"{path!r}: input shape {list(inp['shape'])} is not an NHWC image batch")
    consts = {}

    def const(index):
        if index < 0:
            return None
        if index not in consts:
            try:
                consts[index] = np.array(interp.get_tensor(index), np.float64)
            except ValueError:
                consts[index] = None
        return consts[index]

    nodes = []
    for op in interp._get_ops_details():
        kind = _OPS.get(op["op_name"], "other")
        ins = [int(i) for i in op["inputs"]]
        out = str(int(op["outputs"][0]))
        name = details[int(op["outputs"][0])]["name"]
        if kind == "conv":
            w, b = const(ins[1]), const(ins[2]) if len(ins) > 2 else None
            if op["op_name"] == "DEPTHWISE_CONV_2D":  # (1, KH, KW, C) -> (C, 1, KH, KW)
                w, group = w.transpose(3, 0, 1, 2), w.shape[3]
            else:  # (O, KH, KW, I) -> OIHW
                w, group = w.transpose(0, 3, 1, 2), 1
            nodes.append(Node("conv", [str(ins[0])], out, name, dict(weight=w, bias=b, group=group)))
        elif kind == "dense":
            nodes.append(Node("dense", [str(ins[0])], out, name,
                              dict(weight=const(ins[1]), bias=const(ins[2]) if len(ins) > 2 else None)))
        elif kind == "add":
            nodes.append(Node("add", [str(i) for i in ins], out, name))
        else:
            nodes.append(Node(kind, [str(ins[0])], out, name))
    hw = (int(inp["shape"][1]), int(inp["shape"][2]))

    def run(x):
        try:
            if x.shape[0] != inp["shape"][0]:
                interp.resize_tensor_input(inp["index"], list(x.shape))
                interp.allocate_tensors()
            interp.set_tensor(inp["index"], np.ascontiguousarray(x, np.float32))
            interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise CompareError(f"LiteRT failed running {path!r} on input {list(x.shape)}: {exc}") from None
        out = {}
        for n in nodes:
            out[n.output] = np.array(interp.get_tensor(int(n.output)))
        return out

    return OtherModel("tflite", path, nodes, "NHWC", hw, "NHWC", runner=run, fused_activations=True)
