"""Which of OTHER's tensors is which Keras layer's output.

By the network's fixed topology: the i-th convolution OTHER runs is the i-th of MobileNetV2
(checked by kind and weight shape where OTHER's weights are readable); what follows it (a
BatchNormalization node, a Clip/Relu (or Max then Min, or Relu then Min: one ReLU6, read at the
Min), an Add of two activations, the pooling and the dense head)
is named from the Keras layers that follow that convolution.  A conv with its batch norm folded
in (conv + bias) maps to the Keras ``*_BN`` layer; one that also carries its ReLU6 (TFLite) to
``*_relu``.  In a quantized graph the layer's tensor is the one after its QuantizeLinear ->
DequantizeLinear pair (or a QOperator op's integer output); a conv whose output grid starts at
zero carries its ReLU6 in that grid (ONNX Runtime's quantizer drops the Clip) and maps to
``*_relu``; in a graph computing in float16 or bfloat16, the one after its Cast pair.  A Keras
layer OTHER has no counterpart of (a residual Add it does not run) is reported, not skipped
silently.  ``predictions`` is OTHER's final output: the dense layer, its bias, and whatever
OTHER applies after them (a Softmax, a Sigmoid, a scale), each named in the row's ``how``; where
the head is not recognised op by op (a pooling compare has no name for), OTHER's one graph output
is still compared as ``predictions``, so a head that differs can never read as agreeing.  A
global max pooling maps to Keras's pooling layer (the reference pools by max only without a head,
Keras's ``pooling='max'``; with one, the diagnosis names it).
A JSON mapping file (``{"input": ..., "layout": ..., "tensors": {OTHER: KERAS}}``)
overrides all of this and is how a tensor dump is mapped (or its arrays are named as Keras's).
"""
import json
import os
from dataclasses import dataclass

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network import layers as L
from mobilenetv2.errors import a_or_an
from mobilenetv2.tools.compare.errors import CompareError, read_input
from mobilenetv2.tools.compare.graph import Node

MAX_MAPPING_BYTES = 1 << 20


@dataclass
class Match:
    layer: str      # Keras layer name
    tensor: str     # OTHER's tensor name
    how: str        # how the match was made, for the report


def _no_constant(name):
    raise ValueError(f"{name} is not allowed in a mapping file")


def load_mapping_file(path):
    """The mapping file as (tensors {OTHER: KERAS}, input name or None, layout or None); from
    Python also the dict such a file holds."""
    if isinstance(path, dict):
        data, where = path, "the mapping given"
    elif not isinstance(path, (str, bytes, os.PathLike)):
        raise CompareError(f"mapping must be the path of a JSON mapping file (or, from Python, the dict it "
                           f"holds), got {type(path).__name__}")
    else:
        path = files.path_str(path)
        where = f"mapping file {path!r}"
        raw = read_input(path, "mapping file", MAX_MAPPING_BYTES)
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise CompareError(f"mapping file {path!r} is not valid JSON: {str(exc)[:120]}") from None
    if isinstance(data, dict) and "tensors" not in data:
        data = {"tensors": data}
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data["tensors"].items()) or not all(
            isinstance(data.get(k), (str, type(None))) for k in ("input", "layout")):
        raise CompareError(f"{where} must be a JSON object "
                           '{"input": NAME, "layout": "NCHW"|"NHWC", "tensors": {OTHER_NAME: KERAS_LAYER}}')
    return data["tensors"], data.get("input"), data.get("layout")


def map_by_names(tensors, ref_layers, how):
    """Matches from a {OTHER tensor: Keras layer} dict, in the network's order."""
    order = {layer.name: i for i, layer in enumerate(ref_layers)}
    bad = sorted(v for v in tensors.values() if v not in order)
    if bad:
        raise CompareError(f"the mapping names layers this MobileNetV2 does not have: {bad[:5]} "
                           "(use Keras layer names, e.g. block_3_expand_relu)")
    return sorted((Match(k, t, how) for t, k in tensors.items()), key=lambda m: order[m.layer])


def _keras_follow(ref_layers):
    """For each Keras layer name, the layers that read it."""
    readers = {}
    for layer in ref_layers:
        for i in layer.inputs:
            readers.setdefault(i, []).append(layer)
    return readers


def _expected_oihw(layer):
    kh, kw, a, b = layer.weight_shapes()[0]  # (a conv with a bias of its own: kernel, bias)
    return (a, 1, kh, kw) if isinstance(layer, L.DepthwiseConv2D) else (b, a, kh, kw)


def keras_convs(ref_layers):
    return [x for x in ref_layers if isinstance(x, (L.Conv2D, L.DepthwiseConv2D))]


def check_convs(convs, ref_layers):
    """None where OTHER's convolutions have MobileNetV2's kinds and shapes, else why not."""
    kconvs = keras_convs(ref_layers)
    if len(convs) != len(kconvs):
        return f"OTHER runs {len(convs)} convolutions, MobileNetV2 has {len(kconvs)}"
    for i, (node, layer) in enumerate(zip(convs, kconvs)):
        w = node.attrs.get("weight")
        if w is not None and tuple(w.shape) != _expected_oihw(layer):
            return (f"OTHER's convolution #{i + 1} ({node.name or node.output}) has weight shape "
                    f"{tuple(w.shape)} (OIHW), MobileNetV2's {layer.name} has {_expected_oihw(layer)}")
    return None


def _alpha_of(convs, ref_layers):
    """The official alpha whose convolutions OTHER's have, where it is not the reference's."""
    from mobilenetv2.network import arch
    for alpha in (0.35, 0.5, 0.75, 1.0, 1.3, 1.4):
        if check_convs(convs, arch.build_layers(alpha, include_top=False)) is None:
            return alpha
    return None


HEAD_OPS = {"Sigmoid": "sigmoid", "Softmax": "softmax", "LogSoftmax": "log-softmax", "Tanh": "tanh",
            "Relu": "ReLU", "Exp": "exp"}


def map_by_topology(other, ref_layers, missing=None):
    """Matches by topology (see the module's text).  ``missing``: a list that receives
    ``{"layer": KERAS, "why": ...}`` for each Keras layer OTHER's graph shows no counterpart of
    (a residual Add it does not run, a ReLU6 it skips, a head it lacks)."""
    nodes = other.nodes
    missing = [] if missing is None else missing
    convs = [n for n in nodes if n.op == "conv"]
    why = check_convs(convs, ref_layers)
    if why:
        alpha = _alpha_of(convs, ref_layers) if len(convs) == len(keras_convs(ref_layers)) else None
        if alpha is not None:
            raise CompareError(f"cannot map {other.source!r} onto the reference: the widths differ ({why}); "
                               f"OTHER's convolutions are those of a MobileNetV2 alpha={alpha:g} (different "
                               "alpha? give reference weights of that alpha with --weights)")
        raise CompareError(f"cannot map {other.source!r} onto MobileNetV2 by topology: {why} "
                           "(give a --mapping file)")
    consumers = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    readers = _keras_follow(ref_layers)
    matches = []
    mapped = {}  # Keras name -> OTHER tensor

    def only(tensor, ops):
        """The single consumer of ``tensor`` if its op is one of ``ops``, looking through layout
        changes (tf2onnx's Transpose pairs around each op, Identity)."""
        c = consumers.get(tensor, [])
        while len(c) == 1 and c[0].op == "reshape" and c[0].attrs.get("kind") in ("Transpose", "Identity") \
                and "reshape" not in ops:
            c = consumers.get(c[0].output, [])
        return c[0] if len(c) == 1 and c[0].op in ops else None

    def add(layer, tensor, how):
        matches.append(Match(layer, tensor, how))
        mapped[layer] = tensor

    grids = other.quant or {}

    def rounded(tensor):
        """``tensor``, or the output of the Q -> DQ pair that rounds it onto an integer grid; in a
        LiteRT graph (fused activations) also of the QUANTIZE after a layer left in float (a
        partly quantized file: the next layer reads its output on that int8 grid)."""
        q = only(tensor, ("qdq", "quant") if other.fused_activations else ("qdq",))
        return q.output if q is not None and (q.op == "qdq" or q.attrs.get("grid") is not None) else tensor

    def relu_in_grid(tensor):
        g = grids.get(tensor)
        return g is not None and np.all(g.zero_point == g.qmin) and only(tensor, ("clip", "relu")) is None

    for i, (node, layer) in enumerate(zip(convs, keras_convs(ref_layers))):
        kind = "depthwise " if isinstance(layer, L.DepthwiseConv2D) else ""
        where = f"conv #{i + 1} {node.name or node.output!r} ({kind}{layer.kernel if hasattr(layer, 'kernel') else 3}x"
        where += f"{layer.kernel if hasattr(layer, 'kernel') else 3}, stride {layer.stride})"
        t = node.output
        bn = readers[layer.name][0] if layer.name in readers else None
        if not isinstance(bn, L.BatchNormalization):  # a conv with a bias of its own (DeepLabV3's logits)
            nxt = only(t, ("affine",))
            if nxt is not None and nxt.attrs["kind"] in ("Add", "Sub"):
                t, where = nxt.output, where + " + bias"
            add(layer.name, rounded(t), where)
            continue
        after = readers.get(bn.name, [])
        act = next((x for x in after if isinstance(x, L.ReLU)), None)
        residual = next((x for x in after if isinstance(x, L.Add) and x.inputs[1] == bn.name), None)
        nxt = only(t, ("bn",))
        if nxt is not None:
            add(layer.name, t, f"{where}, its BatchNormalization separate")
            t = nxt.output
            add(bn.name, t, "BatchNormalization node after " + where)
        else:
            # BN folded into the conv (+ bias), or written out as Mul/Add by constants
            chain = []
            while True:
                nxt = only(t, ("affine",))
                if nxt is None:
                    break
                chain.append(nxt)
                t = nxt.output
            q = rounded(t)
            if other.fused_activations and act is not None:
                add(act.name, q, f"{where} with BN and ReLU6 fused into it (activation by topology)" +
                    (", then QUANTIZE onto int8" if q != t else ""))
                continue
            if act is not None and relu_in_grid(q):
                add(act.name, q, f"{where} with BN folded in, ReLU6 in its int8 output grid (zero point at its minimum)")
                continue
            how = f"{where} with BN folded in" + (" (BN as Mul/Add)" if chain else "")
            how += _after_rounding(other, q) if q != t else (", its int8 output" if t in grids else "")
            t = q
            add(bn.name, t, how)
        if act is not None:
            a = only(t, ("clip", "relu"))
            if a is not None:
                nxt2 = only(a.output, ("clip",))  # Max then Min, or Relu then Min (tf.minimum(tf.nn.relu(x), 6))
                if nxt2 is not None and (a.op == "relu" or a.attrs.get("op")):
                    a = nxt2
                add(act.name, rounded(a.output), f"{a.op} node after {bn.name}")
            elif not other.fused_activations and not any(c.op in ("clip", "relu") for c in consumers.get(t, [])):
                missing.append({"layer": act.name, "why": f"no Clip/Relu after {bn.name}: a missing ReLU6?"})
        if residual is not None:
            seen, add_node = [t], None
            while add_node is None and seen:  # through layout changes, as above
                nxt_t = seen.pop()
                for n in consumers.get(nxt_t, []):
                    if n.op == "add":
                        add_node = n
                    elif n.op == "reshape" and n.attrs.get("kind") in ("Transpose", "Identity"):
                        seen.append(n.output)
            if add_node is not None:
                add(residual.name, rounded(add_node.output), "Add of two activations after " + bn.name)
            else:
                missing.append({"layer": residual.name, "why": (
                    f"no Add after {bn.name}: a torch module's adds are in its forward, which hooks "
                    "cannot see" if other.kind == "torch" else f"no Add after {bn.name}: a missing residual add?")})
    # the head: pooling, then the dense classifier
    last = matches[-1].tensor
    names = {x.name: x for x in ref_layers}
    pool = next((n for n in nodes if n.op == "pool" and last in n.inputs), None) or only(last, ("pool",))
    order = {x.name: i for i, x in enumerate(ref_layers)}
    gap = next((x.name for x in ref_layers if isinstance(x, (L.GlobalAveragePooling2D, L.AveragePooling2D))  # the classifier's,
                and order[x.name] > order[matches[-1].layer]), None)  # not DeepLabV3's image pooling
    if pool is not None and gap is not None:
        kind = pool.attrs.get("kind", "average")
        t, how = rounded(pool.output), ("average pooling window " + "x".join(map(str, pool.attrs.get("kernel") or ()))
                                        if kind == "window" else f"global {kind} pooling")
        while True:
            nxt = only(t, ("reshape",))
            if nxt is None:
                break
            t, how = rounded(nxt.output), how + " + " + nxt.attrs.get("kind", "reshape")
        add(gap, t, how)
        dense = only(t, ("dense",))
        if dense is not None and "predictions" in names:
            t, how = rounded(dense.output), "dense layer after the pooling"
            nxt = only(t, ("affine",))
            if nxt is not None and nxt.attrs["kind"] in ("Add", "Sub"):
                t, how = rounded(nxt.output), how + " + bias"
            t, how = _head_chain(t, how, only, rounded)
            add("predictions", t, how)
        elif "predictions" in names:
            missing.append({"layer": "predictions", "why": "no dense layer after the pooling"})
    elif gap is not None:
        missing.append({"layer": gap, "why": "no global average pooling after the last convolution"})
        if "predictions" in names:
            missing.append({"layer": "predictions", "why": "no dense layer after a global average pooling"})
    if "predictions" in names and not any(m.layer == "predictions" for m in matches):
        final = _final_output(other, last)
        if final is not None:  # a head not recognised is still compared where it ends: OTHER's output
            missing[:] = [u for u in missing if u["layer"] != "predictions"]
            add("predictions", final, "OTHER's final output (its head as OTHER computes it; not "
                "recognised op by op)")
    return sorted(matches, key=lambda m: order[m.layer])


def _final_output(other, last):
    """OTHER's one output tensor, where it has exactly one and it is not the last convolution's
    ``last``; else None."""
    ends = [t for t in other.outputs or () if t != last]
    return ends[0] if len(ends) == 1 else None


def _after_rounding(other, q):
    """How the tensor ``q`` that rounds a layer's output is reached: a Q/DQ pair or a Cast pair."""
    kind = (getattr(other, "float_rounding", None) or {}).get(q)
    if kind is not None:
        return f", after its Cast to {kind} and back to float32"
    return ", after its FakeQuantize" if other.kind.startswith("openvino") else ", after its QuantizeLinear/DequantizeLinear"


def _head_chain(t, how, only, rounded):
    """OTHER's final output after its logits ``t``: what it applies to them (softmax, sigmoid, a
    scale, ...) up to its graph output, each op named in ``how``; the predictions are compared
    there, as OTHER computes them."""
    best = (t, how)  # the last tensor an op changed: a trailing Identity keeps the logits' name
    for _ in range(16):
        nxt = only(t, ("softmax", "affine", "reshape", "other"))
        if nxt is None or (nxt.op == "other" and nxt.attrs.get("kind") not in HEAD_OPS):
            break
        if nxt.op == "reshape":
            if nxt.attrs.get("kind") not in ("Identity", "Dropout", "Flatten", "Reshape", "Squeeze"):
                break
            t = rounded(nxt.output)
            continue
        if nxt.op == "softmax":
            how += " + Softmax"
        elif nxt.op == "affine":
            v = np.asarray(nxt.attrs["value"]).reshape(-1)
            how += f" + {nxt.attrs['kind']} by " + (f"{v[0]:.4g}" if v.size == 1 else a_or_an(f"{v.size}-vector"))
        else:
            how += f" + {nxt.attrs['kind']}"
        t = rounded(nxt.output)
        best = (t, how)
    return best


def head_convs_as_dense(nodes):
    """``nodes`` with the last convolution made a dense node where it is a 1x1 one that reads a
    pooling's output (through reshapes): the classifier as TF-slim writes it (its logits conv
    after the 7x7 pooling) and as our export of that head does.  (DeepLabV3's image-pooling conv
    reads a pooling too, but it is not the last.)"""
    pooled = {n.output for n in nodes if n.op == "pool"}
    last = next((n for n in reversed(nodes) if n.op == "conv"), None)
    out = []
    for n in nodes:
        w = n.attrs.get("weight")
        if n.op == "reshape" and n.inputs[0] in pooled:
            pooled.add(n.output)
        elif (n is last and n.inputs[0] in pooled and w is not None and w.shape[2:] == (1, 1)
              and n.attrs.get("group", 1) == 1):
            n = Node("dense", n.inputs, n.output, n.name, dict(n.attrs, weight=w[:, :, 0, 0]))
        out.append(n)
    return out


def head_classes(other):
    """OTHER's classifier width (from its dense weight), or None."""
    dense = [n for n in other.nodes if n.op == "dense" and n.attrs.get("weight") is not None]
    return int(dense[-1].attrs["weight"].shape[0]) if dense else None


def has_head(other):
    return any(n.op == "dense" for n in other.nodes)


def unread_head(other):
    """The kinds of OTHER's ops after its global pooling, where OTHER computes past it (its one
    output is not the pooling's, through reshapes) with no dense node compare reads (an ONNX
    Runtime dynamically quantized MatMulInteger, a custom op): [] where there is none such."""
    pool = next((n for n in reversed(other.nodes) if n.op == "pool"), None)
    ends = list(other.outputs or ())
    if pool is None or has_head(other) or len(ends) != 1:
        return []
    chain, after = {pool.output}, {pool.output}
    for n in other.nodes:
        if n.inputs and n.inputs[0] in chain and n.op == "reshape":
            chain.add(n.output)
        if any(i in after for i in n.inputs):
            after.add(n.output)
    if ends[0] in chain or any(n.op in ("conv", "pool", "add") for n in other.nodes
                               if any(i in after for i in n.inputs)):  # not a classifier: DeepLabV3's image pooling
        return []
    return list(dict.fromkeys(n.attrs.get("kind", n.op) for n in other.nodes  # (layout ops left out)
                              if any(i in after for i in n.inputs) and n.output not in chain and n.op != "reshape"))


def to_nhwc(array, want_shape, layout):
    """OTHER's array as NHWC to compare with a reference of shape ``want_shape`` (N, ...), and
    how it was read: its own layout where the shape allows, else whichever layout fits."""
    a = np.asarray(array)
    if a.ndim == len(want_shape) - 1:
        a = a[None]
    if a.ndim == 4 and len(want_shape) == 2 and a.shape[2:] == (1, 1):
        a = a[:, :, 0, 0]  # pooled (N, C, 1, 1)
    if a.ndim == 4 and len(want_shape) == 2 and a.shape[1:3] == (1, 1):
        a = a[:, 0, 0, :]
    if a.ndim != 4 or len(want_shape) != 4:  # (a feature map mapped to a vector layer: its shape differs)
        return a, "as is"
    nchw_ok = a.shape[1:] == (want_shape[3], want_shape[1], want_shape[2])
    nhwc_ok = tuple(a.shape[1:]) == tuple(want_shape[1:])
    if nhwc_ok and (layout == "NHWC" or not nchw_ok):
        return a, "NHWC"
    if nchw_ok or layout == "NCHW":
        return a.transpose(0, 2, 3, 1), "NCHW"
    return a, "NHWC"
