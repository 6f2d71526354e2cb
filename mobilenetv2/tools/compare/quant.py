"""int8 on the reference's side: OTHER's own integer grids (from a quantized ONNX graph) carried
over to the float64 reference, so that ``precision`` at int8 level is confirmed the way every
other cause is: re-run the reference with the defect applied, here "computes in int8".

The ``int8`` patch folds each batch norm into its convolution (as a quantizer does before it
rounds), rounds the folded weights onto the graph's own grid (per channel or per tensor, its
scales and zero points), the biases onto their int32 grid, and rounds every activation OTHER
rounds (the input included) with that tensor's scale and zero point, clamped to its range.  Its
floor is measured (``Reference.floors``): the same int8 reference run by our float32 engine
against float64, never below one step at one value.  Each layer is run from OTHER's own tensors
at its inputs: an int8 runtime's kernels (requantization, saturating multiply-adds) put the odd
value a step away from exact arithmetic, and a step flipped early becomes hundreds downstream;
run on OTHER's inputs, a layer that computes what the patched reference computes differs only by
such steps, and that is what "agrees" means at int8.  A defect is still local to its layer and
shows there (other pads on one conv change a whole border).

Dynamic quantization (LiteRT's hybrid kernels, ONNX Runtime's DynamicQuantizeLinear: int8
weights, float activations) rounds each conv's and dense layer's float input onto an 8-bit grid
of its own as it runs, per image or per tensor (``dynamic_int8``); the int8 patch does the same
to the reference's input of those layers.
"""
import copy
from dataclasses import dataclass

import numpy as np

from mobilenetv2.network import layers as L
from mobilenetv2.engines.numpy_kernels import fold_batchnorm
from mobilenetv2.tools.compare.mapping import keras_convs
from mobilenetv2.tools.compare.reference import Patch, clone


@dataclass
class QuantInfo:
    acts: dict      # Keras layer -> QParams: OTHER's tensor mapped to that layer lies on this grid
    input: object   # QParams of OTHER's input rounding, or None
    weights: dict   # Keras conv / dense name -> (weight QParams, bias QParams or None, OTHER's
                    # dequantized weights in the Keras layout: the side it took at a rounding tie)
    forced: dict = None  # Keras layer -> OTHER's tensor there (NHWC): what the int8 reference runs from
    input_seen: object = None  # OTHER's rounded input (NHWC), where its run shows it: its side at a tie
    rounding: dict = None  # Keras layer -> 'bfloat16' / 'float16': OTHER rounds its output (Cast pairs)
    dynamic: dict = None   # Keras conv / dense name -> (mode, group): its input rounded as OTHER runs (dynamic_int8)


def quant_info(other, matches, ref_layers):
    """What OTHER rounds, by Keras layer name; None where OTHER is not a quantized graph."""
    acts = {m.layer: other.quant[m.tensor] for m in matches if m.tensor in (other.quant or {})}
    rounding = {m.layer: other.float_rounding[m.tensor] for m in matches
                if m.tensor in (getattr(other, "float_rounding", None) or {})}
    weights, dynamic = {}, {}
    convs = [n for n in other.nodes if n.op == "conv"]
    for node, layer in zip(convs, keras_convs(ref_layers)):
        if node.attrs.get("weight_q") is not None:
            w = node.attrs["weight"]
            w = w[:, 0].transpose(1, 2, 0) if isinstance(layer, L.DepthwiseConv2D) else w.transpose(2, 3, 1, 0)
            weights[layer.name] = (node.attrs["weight_q"], node.attrs.get("bias_q"), w)
            if node.attrs.get("dynamic"):
                dynamic[layer.name] = (node.attrs["dynamic"], node.attrs.get("dynamic_group"))
    dense = [n for n in other.nodes if n.op == "dense"]
    if dense and dense[-1].attrs.get("weight_q") is not None and any(x.name == "predictions" for x in ref_layers):
        weights["predictions"] = (dense[-1].attrs["weight_q"], dense[-1].attrs.get("bias_q"), dense[-1].attrs["weight"].T)
        if dense[-1].attrs.get("dynamic"):
            dynamic["predictions"] = (dense[-1].attrs["dynamic"], dense[-1].attrs.get("dynamic_group"))
    if not acts and not weights and not rounding:
        return None
    return QuantInfo(acts, other.input_quant, weights, rounding=rounding or None, dynamic=dynamic or None)


def rounded_compute(ref, kind, round_fn, folded):
    """The patch of a graph computing in ``kind`` (bfloat16 / float16): the weights patch
    ``folded`` plus every output OTHER rounds (its Cast pairs) rounded by ``round_fn``; its
    floor is measured like int8's, at least one ulp of the layer's largest value."""
    info = getattr(ref, "quant", None)
    names = [k for k, v in ((info.rounding or {}) if info else {}).items() if v == kind and k in ref.index]
    if not names:
        return None
    base = ref.base()
    bits = 8 if kind == "bfloat16" else 11
    post = {k: (lambda y: round_fn(y).astype(y.dtype)) for k in names}
    steps = {k: float(np.max(np.abs(base[k]))) * 2.0 ** -bits for k in names}
    return Patch("precision", f"{folded.text}, and the outputs of {len(names)} layers rounded to {kind} "
                 "where OTHER casts them", folded.layers, post=post, steps=steps,
                 detail=dict(folded.detail, activations=kind, rounded_layers=len(names),
                             inputs="each layer run from OTHER's own tensors at its inputs"))


def rounded_activations(ref, kind, round_fn):
    """The patch of a graph with float32 weights computing in ``kind``: only the outputs OTHER
    rounds (its Cast pairs) rounded by ``round_fn``, the weights as they are."""
    info = getattr(ref, "quant", None)
    names = [k for k, v in ((info.rounding or {}) if info else {}).items() if v == kind and k in ref.index]
    base = ref.base()
    bits = 8 if kind == "bfloat16" else 11
    post = {k: (lambda y: round_fn(y).astype(y.dtype)) for k in names}
    steps = {k: float(np.max(np.abs(base[k]))) * 2.0 ** -bits for k in names}
    return Patch("precision", f"the outputs of {len(names)} layers rounded to {kind} where OTHER casts them "
                 f"(its Cast to {kind} and back), the weights as they are", {}, post=post, steps=steps,
                 detail={"weights": "as given", "folded": False, "activations": kind, "rounded_layers": len(names),
                         "inputs": "each layer run from OTHER's own tensors at its inputs"})


def own_weights(other, ref_layers):
    """OTHER's float weights by Keras conv / dense name, in the reference's layout (a depthwise
    kernel as (kh, kw, C)): (kernel, bias or None).  What a rounded weight may take the side of."""
    out = {}
    convs = [n for n in other.nodes if n.op == "conv"]
    for node, layer in zip(convs, keras_convs(ref_layers)):
        w = node.attrs.get("weight")
        if w is None:
            continue
        w = np.asarray(w, np.float64)
        w = w[:, 0].transpose(1, 2, 0) if isinstance(layer, L.DepthwiseConv2D) else w.transpose(2, 3, 1, 0)
        b = node.attrs.get("bias")
        out[layer.name] = (w, None if b is None else np.asarray(b, np.float64))
    dense = [n for n in other.nodes if n.op == "dense" and n.attrs.get("weight") is not None]
    if dense and any(x.name == "predictions" for x in ref_layers):
        b = dense[-1].attrs.get("bias")
        out["predictions"] = (np.asarray(dense[-1].attrs["weight"], np.float64).T,
                              None if b is None else np.asarray(b, np.float64))
    return out


def _last_axis(v, n):
    v = np.asarray(v, np.float64).reshape(-1)
    return v if v.size in (1, n) else None


def round_to_grid(x, scale, zero_point, qmin, qmax):
    """Values of ``x`` rounded onto the grid (q - zero_point) * scale, q in [qmin, qmax], with
    ties to even as QuantizeLinear does; ``scale`` / ``zero_point`` per last axis or scalars."""
    q = np.clip(np.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale


def activation_fn(grid, as_quantize_linear=False, seen=None):
    """The rounding of a layer's NHWC output (or (N, C) vector) onto an activation grid.
    ``as_quantize_linear``: divide in float32 as ONNX Runtime's QuantizeLinear does, for the
    input: preprocessed pixels (p / 127.5 - 1) on a 2/255 grid all sit on ties, which float32
    and float64 division break differently; an OpenVINO FakeQuantize's grid (``fq_range``) as
    its CPU plugin's kernel computes it: x * isc + ish in one fused multiply-add rounded to
    float32, isc = (levels - 1) / (hi - lo) and ish = -lo * isc in float32 (OpenVINO 2026.4).
    The plugin computes some of them with a multiply and an add instead (the input FakeQuantize of
    an nncf int8 backbone, its output requested: one value in 301,056 of two random images fell in
    the other bin), and a value 1.5e-5 steps above halfway went down in another (a FakeQuantize
    built with openvino.opset13, on the input only; 1 value in 27,648 of one random image): where
    the two forms round apart or a value is within ``TIE`` steps of halfway, ``seen`` (OTHER's own
    rounded values for the same batch, where its run shows them) decides."""
    def fn(y):
        c = y.shape[-1]
        s, z = _last_axis(grid.scale, c), _last_axis(grid.zero_point, c)
        if as_quantize_linear and grid.fq_range is not None:
            lo, hi = (_last_axis(v, c).astype(np.float32) for v in grid.fq_range)
            isc = np.float32(grid.qmax - grid.qmin) / (hi - lo)
            x32 = y.astype(np.float32)
            fma = (x32.astype(np.float64) * isc + (-lo * isc)).astype(np.float32)
            q = np.round(fma)
            if seen is not None and seen.shape == y.shape:
                apart = np.round((x32 * isc).astype(np.float32) + (-lo * isc)) != q
                apart |= np.abs(np.abs(fma - np.floor(fma)) - 0.5) < TIE  # within TIE steps of halfway
                q = np.where(apart, np.round(seen.astype(np.float64) / s) + z, q)
            q = np.clip(q, grid.qmin, grid.qmax)
            return ((q - z) * s).astype(y.dtype)
        if as_quantize_linear:
            q = np.clip(np.round(y.astype(np.float32) / s.astype(np.float32)) + z, grid.qmin, grid.qmax)
            return ((q - z) * s).astype(y.dtype)
        return round_to_grid(y, s.astype(y.dtype), z.astype(y.dtype), grid.qmin, grid.qmax).astype(y.dtype, copy=False)
    return fn


def _weight_grid(grid, cout, w):
    """(scale, zero point, qmin, qmax) per output channel (the last axis of ``w``)."""
    if grid is None:  # no grid in OTHER: per-channel symmetric, max |w| / 127
        s = np.abs(w).reshape(-1, cout).max(axis=0) / 127.0
        # a channel of zeros, or of weights so small that their step is 0 in float32 (where the
        # quantizer divides by it; 0 / 0 was NaN weights): step 1, its weights all round to 0
        return np.where(s.astype(np.float32) > 0, s, 1.0), np.zeros(cout), -127, 127
    s, z = _last_axis(grid.scale, cout), _last_axis(grid.zero_point, cout)
    if s is None or z is None or not np.all(np.isfinite(s) & (s > 0)):
        return None  # not a grid these weights can be rounded onto: no int8 patch
    return s, z, grid.qmin, grid.qmax


TIE = 1e-4  # steps: a weight this close to halfway between two grid points is on a tie


def _round_as_quantizer(w, grid, other=None):
    """Float weights onto an int8 grid as a quantizer does it: the float32 weights (what the
    exported file held) divided by the float32 scale, in float32.  A weight on a tie (within
    float32 rounding of halfway) goes either way by the quantizer's arithmetic: where OTHER's
    own weight is one of its two neighbours, that side is taken."""
    s, z, qmin, qmax = grid
    q = np.clip(np.round(w.astype(np.float32) / np.asarray(s, np.float32)) + z, qmin, qmax).astype(np.float64)
    if other is not None and other.shape == w.shape:
        exact = w / s + z
        q_other = np.round(other / s) + z
        tie = (np.abs(np.abs(exact - np.floor(exact)) - 0.5) < TIE) & (np.abs(q_other - exact) < 0.5 + TIE)
        q = np.where(tie, q_other, q)
    return (q - z) * np.asarray(s, np.float64)


def rounded_as_other(w, grid, other):
    """Float weights ``w`` (output channels last) rounded onto OTHER's int8 ``grid`` as its
    quantizer did (``other``: OTHER's own, whose side a tie takes); None where ``grid`` does not fit."""
    g = _weight_grid(grid, w.shape[-1], w)
    return None if g is None else _round_as_quantizer(w, g, other)


def folded(conv, bn):
    """(kernel, bias) of ``conv`` with its batch norm ``bn`` (or None) folded in, in float64; a
    depthwise kernel as (kh, kw, C)."""
    k = np.asarray(conv.weights[0], np.float64)
    k = k[..., 0] if isinstance(conv, L.DepthwiseConv2D) else k
    if bn is None:
        return k, np.asarray(conv.weights[1], np.float64)
    return fold_batchnorm(k, *(np.asarray(a, np.float64) for a in bn.weights), eps=bn.epsilon)


def set_folded(layers, conv, bn, w, bias):
    """Patch entries (``layers``: name -> function(layer)) making ``conv`` compute with the folded
    kernel ``w`` (a depthwise one as (kh, kw, C)) and ``bias``: its batch norm ``bn`` (or, with
    none, the conv's own bias) adds the bias and nothing else."""
    w = w[..., None] if isinstance(conv, L.DepthwiseConv2D) else w
    if bn is None:
        layers[conv.name] = lambda layer, w=w, b=bias: clone(
            layer, weights=[a.astype(layer.weights[0].dtype) for a in (w, b)])
        return
    ones = np.ones_like(bias)
    layers[conv.name] = lambda layer, w=w: clone(layer, weights=[w.astype(layer.weights[0].dtype)])
    layers[bn.name] = lambda layer, b=bias, ones=ones: clone(
        layer, epsilon=0.0, weights=[a.astype(layer.weights[0].dtype) for a in (ones, b, np.zeros_like(ones), ones)])


def _round_half_away(a):
    """C's round(): halves away from zero (LiteRT's TfLiteRound), not NumPy's to even."""
    a = np.asarray(a, np.float64)
    return np.copysign(np.floor(np.abs(a) + 0.5), a)


def dynamic_int8(x, mode, group=None):
    """``x`` (a batch) as LiteRT's hybrid kernels see it: each image's float32 values rounded onto
    an int8 grid of their own, then back to values.  'symmetric': step max |x| / 127, q in
    [-127, 127]; 'asymmetric': the range [min(0, min x), max(0, max x)] in 255 steps, the zero
    point (from the end whose error is smaller) nudged onto [-128, 127], q = round(zp + x / step)
    in float32.  An image of zeros stays zeros.  'per-tensor uint8': ONNX's DynamicQuantizeLinear,
    one grid for the whole batch: step (max(0, max x) - min(0, min x)) / 255 in float32, the zero
    point round(-min / step) onto [0, 255], q = round(x / step) + zero point (halves to even);
    ``group``: the images OTHER runs at a time (a graph with a fixed batch size is run that many
    at once), each group on a grid of its own."""
    x32 = np.asarray(x, np.float32)
    out = np.zeros(x32.shape, np.float64)
    if mode == "per-tensor uint8" and group and len(x32) > group:
        return np.concatenate([dynamic_int8(x[i:i + group], mode) for i in range(0, len(x32), group)])
    if mode == "per-tensor uint8":
        lo, hi = min(np.float32(0), x32.min()), max(np.float32(0), x32.max())
        if lo == hi:
            return out.astype(np.asarray(x).dtype, copy=False)
        s = np.float32((hi - lo) / np.float32(255))
        z = float(np.round(np.clip(np.float32(0) - lo / s, 0, 255)))
        q = np.clip(np.round(x32 / s) + z, 0, 255)
        return ((q - z) * float(s)).astype(np.asarray(x).dtype, copy=False)
    for b, v in enumerate(x32):
        lo, hi = float(v.min()), float(v.max())
        if mode == "asymmetric":
            rmin, rmax = min(0.0, lo), max(0.0, hi)
            if rmin == rmax:
                continue
            step = (rmax - rmin) / 255.0
            from_min, from_max = -128.0 - rmin / step, 127.0 - rmax / step
            z = from_min if 128.0 + abs(rmin / step) < 127.0 + abs(rmax / step) else from_max
            z = -128.0 if z < -128.0 else 127.0 if z > 127.0 else float(_round_half_away(z))
            s = np.float32(step)
            inv = np.float32(1.0 / float(s))
            q = np.clip(_round_half_away(np.float32(z) + v * inv), -128, 127)
            out[b] = (q - z) * float(s)
        else:
            r = np.float32(max(abs(lo), abs(hi)))
            if r == 0:
                continue
            q = np.clip(_round_half_away(v * (np.float32(127) / r)), -127, 127)
            out[b] = q * float(r / np.float32(127))
    return out.astype(np.asarray(x).dtype, copy=False)


_DYNAMIC_CLASSES = {}


def _dynamic_steps(ref, dynamic, layers):
    """{Keras layer: what one input value rounded a step the other way does to it (L2)} for the
    units (conv, batch norm, ReLU6, residual add) of the layers whose input LiteRT rounds as it
    runs: a value on a tie (x / step within float32 rounding of halfway) goes either way by the
    kernel's arithmetic (one rounding or two, the zero point added before or after: a 1x1 conv
    of 0.35_96 took -112.49999934 up where float32 gives -112.5, rounded down), and every output
    that value feeds moves by step x its weights.  The step is the largest over the images of the
    layer's input (OTHER's own tensor there, else the reference's)."""
    base, forced = ref.base(), (ref.quant.forced or {}) if ref.quant is not None else {}
    flip = {}
    for name, (mode, _) in dynamic.items():
        if name not in ref.index:
            continue
        layer = ref.layers[ref.index[name]]
        src = layer.inputs[0]
        if isinstance(ref.layers[ref.index[src]], L.ZeroPadding2D):
            src = ref.layers[ref.index[src]].inputs[0]
        x = np.asarray(forced.get(src, base[src]), np.float64)
        x = x.reshape(len(x), -1)
        if mode == "per-tensor uint8":
            step = float(np.maximum(x.max(), 0) - np.minimum(x.min(), 0)) / 255.0
        elif mode == "asymmetric":
            step = float(np.max(np.maximum(x.max(axis=1), 0) - np.minimum(x.min(axis=1), 0))) / 255.0
        else:
            step = float(np.max(np.abs(x))) / 127.0
        k = np.asarray((layers[name](layer) if name in layers else layer).weights[0], np.float64)
        # Dense (in, out); a conv (kh, kw, in, out), a depthwise one (kh, kw, C, 1): each input's weights
        per_input = np.sqrt((k ** 2).sum(axis=1 if isinstance(layer, L.Dense) else (0, 1, 3)))
        flip[name] = step * float(per_input.max())
    return {x.name: flip[u.name] for x in ref.layers[1:] if (u := ref.unit_of(x.name)).name in flip}


def _with_dynamic_input(make, mode, group=None):
    """A patch entry (function(layer) -> layer) that makes the layer ``make`` gives round its
    input as ``dynamic_int8`` does before computing (a subclass of its own class, so the layer
    stays what it was to every other reader)."""
    def patched(layer):
        inner = make(layer) if make is not None else layer
        cls = type(inner)
        if cls not in _DYNAMIC_CLASSES:
            _DYNAMIC_CLASSES[cls] = type(f"DynamicInt8{cls.__name__}", (cls,), {
                "__call__": lambda self, x: cls.__call__(self, dynamic_int8(x, *self.dynamic_mode))})
        c = copy.copy(inner)
        c.__class__ = _DYNAMIC_CLASSES[cls]
        c.dynamic_mode = (mode, group)
        return c
    return patched


def int8_patches(ref):
    """The int8 patches to try: OTHER's own grids (a quantized graph), and int8 weights alone
    (per-channel symmetric, for a graph that stores int8 weights but computes in float)."""
    p = own_int8_patch(ref)
    out = [] if p is None else [p]
    p = _int8_patch(ref, None, {}, None)
    if p is not None:
        out.append(p)
    return out


def own_int8_patch(ref):
    """The int8 patch with OTHER's own grids, or None where OTHER is not a quantized graph."""
    info = getattr(ref, "quant", None)
    if info is None or not (info.acts or info.weights):
        return None
    return _int8_patch(ref, info.weights, info.acts, info.input, info.input_seen, info.dynamic)


def _int8_patch(ref, weight_grids, acts, input_grid, input_seen=None, dynamic=None):
    layers, per_channel, bias_grids = {}, set(), False
    for conv in keras_convs(ref.layers):
        wq, bq, own = (weight_grids or {}).get(conv.name, (None, None, None))
        if weight_grids is not None and wq is None:
            continue
        bn = ref.reader_of(conv.name, L.BatchNormalization)  # None: a conv with a bias of its own (DeepLabV3's logits)
        w, bias = folded(conv, bn)
        g = _weight_grid(wq, w.shape[-1], w)
        if g is None:
            return None
        per_channel.add(np.size(g[0]) > 1)
        w = _round_as_quantizer(w, g, own)
        if bq is not None and _last_axis(bq.scale, bias.size) is not None:
            bias = round_to_grid(bias, _last_axis(bq.scale, bias.size), 0.0, bq.qmin, bq.qmax)
            bias_grids = True
        set_folded(layers, conv, bn, w, bias)
    dense = next((x for x in ref.layers if isinstance(x, L.Dense)), None)
    if dense is not None and (weight_grids is None or dense.name in weight_grids):
        wq, bq, own = (weight_grids or {}).get(dense.name, (None, None, None))
        k, b = (np.asarray(a, np.float64) for a in dense.weights)
        g = _weight_grid(wq, k.shape[-1], k)
        if g is not None:
            k = _round_as_quantizer(k, g, own)
            if bq is not None and _last_axis(bq.scale, b.size) is not None:
                b = round_to_grid(b, _last_axis(bq.scale, b.size), 0.0, bq.qmin, bq.qmax)
            layers[dense.name] = lambda layer, k=k, b=b: clone(layer, weights=[k.astype(layer.weights[0].dtype),
                                                                               b.astype(layer.weights[0].dtype)])
    if not layers:
        return None
    kind = "per channel" if per_channel == {True} else ("per tensor" if per_channel == {False} else "per channel and per tensor")
    if weight_grids is None:
        return Patch("precision", "batch norms folded into the convolutions, then every weight rounded to int8 "
                     "(per channel, symmetric, max |w| / 127)", layers,
                     detail={"weights": "int8", "folded": True, "grid": "per-channel symmetric, max |w| / 127"})
    biases = "biases onto their int32 grids" if bias_grids else "biases left in float, not rounded"
    post = {name: activation_fn(grid) for name, grid in acts.items() if name in ref.index}
    steps = {name: float(np.max(grid.scale)) for name, grid in acts.items() if name in ref.index}
    if dynamic:  # hybrid kernels: each of those layers' input rounded per image as it runs
        for name, (mode, group) in dynamic.items():
            if name in ref.index:
                layers[name] = _with_dynamic_input(layers.get(name), mode, group)
        flips = _dynamic_steps(ref, dynamic, layers)  # (a graph with int8 activations too: the larger)
        steps = {**flips, **{k: max(v, flips.get(k, 0.0)) for k, v in steps.items()}}
        modes = " / ".join(sorted({mode for mode, _ in dynamic.values()}))
        return Patch("precision", f"dynamic range int8 as OTHER computes it: batch norms folded, weights rounded "
                     f"onto the graph's own int8 grids ({kind}), {biases}, and the input of {len(dynamic)} layers "
                     f"rounded onto an 8-bit grid of its own at run time ({modes}: "
                     + ("ONNX Runtime's DynamicQuantizeLinear, one grid per tensor)" if "per-tensor uint8" in modes
                        else "LiteRT's hybrid kernels, one grid per image)"), layers,
                     post=post, steps=steps,
                     detail={"weights": "int8", "folded": True, "grid": f"OTHER's own, {kind}",
                             "activations": f"dynamic ({modes})" if "per-tensor uint8" in modes
                             else f"dynamic, per image ({modes})", "dynamic_layers": len(dynamic),
                             "floor": "measured: this reference run by our float32 engine against float64, at "
                                      "least one input value a step off per layer",
                             "inputs": "each layer run from OTHER's own tensors at its inputs"})
    if not post and input_grid is None:  # int8 weights, float compute
        return Patch("precision", f"batch norms folded, weights rounded onto the graph's own int8 grids ({kind}), "
                     f"{biases}; activations in float as OTHER computes them", layers,
                     detail={"weights": "int8", "folded": True, "grid": f"OTHER's own, {kind}"})
    text = (f"int8 as OTHER computes it: batch norms folded, weights rounded onto the graph's own int8 grids "
            f"({kind}), {biases}, and the outputs of {len(post)} layers rounded with "
            "the graph's scales and zero points")
    input_fn = None
    if input_grid is not None:
        input_fn = activation_fn(input_grid, as_quantize_linear=True, seen=input_seen)
        text += ", the input included"
    return Patch("precision", text, layers, input_fn=input_fn, post=post, steps=steps,
                 detail={"weights": "int8", "folded": True, "grid": f"OTHER's own, {kind}",
                         "activations": len(post), "input": input_grid is not None,
                         "floor": "measured: this int8 reference run by our float32 engine against float64, "
                                  "at least one step at one value per layer",
                         "inputs": "each layer run from OTHER's own tensors at its inputs"})
