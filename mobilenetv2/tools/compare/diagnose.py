"""Why OTHER leaves its noise floor at a layer: suspected defects, each confirmed or not by
re-running the float64 reference with that defect applied and checking that OTHER then agrees
with it to its floor at that layer.

Causes (a fixed vocabulary): ``padding`` (other pads on the layer's convolution), ``bn_epsilon``
(another epsilon, fitted per channel), ``activation`` (ReLU where ReLU6 belongs, or
ReLU6 where a plain ReLU does, or a clip at the other bounds OTHER's output is pinned at), ``layout`` (the
input's channels permuted, e.g. BGR, its height and width transposed, or an NHWC buffer read as
NCHW), ``preprocessing`` (an affine map of the input: the usual ones by name, OTHER's own where its graph
computes one on its input (``graph.input_affine``), else fitted per channel),
``class_offset`` (a 1001-class head on either side, or the class axis shifted by one), ``head``
(OTHER applies something else than softmax to its logits: sigmoid, a scale), ``pooling`` (a
global max pooling where Keras averages, or the reverse), ``missing_layer``
(a Keras layer OTHER's graph has no counterpart of, e.g. a residual Add, left out of the
reference), ``precision`` (weights rounded to float16 or bfloat16, folded or not, every layer's or
those whose own weights in OTHER lie on that grid (a TFLite file float16 in some layers), a weight
within one step of OTHER's own taking OTHER's side; activations rounded where OTHER casts them,
with or without its weights rounded; int8 weights, and for a quantized graph int8 as it
computes: see quant.py), ``bias_correction`` (a quantized OTHER's kernels are the given weights
rounded onto its grid, its biases moved: NNCF's bias correction) and ``different_weights`` (OTHER's
kernels are not the given weights: weight_diff.py, tried after every other cause), ``deployed_kernels`` (OTHER run as it is deployed leaves the floor at
its final output where the copy compare reads every tensor of agrees there: the runtime compiles
the two otherwise; found by api.py, not by a patch), ``unexplained`` (nothing tried brings OTHER
to its floor).  Where no single defect explains the layer, the best one is kept and the others
are tried on top of it: two defects found together are reported with the one that explains most
first (never ``precision``: the defect found with the rounding leads), the other in ``also``.
"""
import itertools

import numpy as np

from mobilenetv2.network import layers as L
from mobilenetv2.engines.numpy_kernels import fold_batchnorm, softmax
from mobilenetv2.tools.compare.quant import int8_patches, rounded_activations, rounded_compute
from mobilenetv2.tools.compare.reference import NO_PATCH, Bypass, ClipReLU, Patch, PlainReLU, clone, fixed_pads
from mobilenetv2.tools.compare.weight_diff import weight_patches

CAUSES = ("padding", "bn_epsilon", "activation", "layout", "preprocessing", "class_offset", "head",
          "pooling", "missing_layer", "precision", "bias_correction", "different_weights", "deployed_kernels",
          "unexplained")
CHANNEL_NAMES = "RGB"


# What Keras's ZeroPadding2D before a stride-2 conv pads on every side when the model's input size is
# not fixed (None): correct_pad takes the side for even, so an odd side gets (0, 1) where (1, 1) belongs
DYNAMIC_KERAS_PADS = (0, 1, 0, 1)


def _padding(ref, layer, other_shape, base):
    here = ref.layers[ref.index[layer]]
    # the layer compared may be the conv's ZeroPadding2D itself (a Keras model's tensors): then
    # OTHER's shape there is the padded one, not the conv's output
    padded = isinstance(here, L.ZeroPadding2D)
    unit = ref.reader_of(layer, (L.Conv2D, L.DepthwiseConv2D)) if padded else ref.unit_of(layer)
    if not isinstance(unit, (L.Conv2D, L.DepthwiseConv2D)) or getattr(unit, "kernel", 3) == 1:
        return []
    pad_layer = ref.layers[ref.index[unit.inputs[0]]]
    target = pad_layer if isinstance(pad_layer, L.ZeroPadding2D) else unit
    src = ref.trace(base, stop=target.name)[target.inputs[0]]
    h, w = src.shape[1:3]
    current = tuple(target.pads(h, w))
    s = unit.stride
    want = tuple(other_shape[1:3]) if other_shape is not None and len(other_shape) == 4 else None
    out = []
    combos = sorted(itertools.product(range(3), repeat=4),
                    key=lambda p: (p != (1, 1, 1, 1), p != (0, 0, 0, 0), p[0] != p[1] or p[2] != p[3], p))
    for p in combos:
        t, b, l, r = p
        size = (h + t + b, w + l + r) if padded else ((h + t + b - 3) // s + 1, (w + l + r - 3) // s + 1)
        if p == current or (want is not None and size != want) or min(size) < 1:
            continue
        text = f"pads (top, bottom, left, right) {p} instead of {current} for {unit.name}"
        if target is pad_layer and p == DYNAMIC_KERAS_PADS:
            text += (" (the pads of an even side on an odd one: Keras's MobileNetV2 pads so when built with "
                     "input size None)")
        out.append(Patch("padding", text, {target.name: lambda x, p=p: clone(x, pads=fixed_pads(p))},
                         detail={"layer": unit.name, "pads": list(p), "reference_pads": list(current)}))
    return out


def _pad_target(ref, conv):
    """The layer whose pads a 3x3 conv uses: its ZeroPadding2D where it has one, else itself."""
    before = ref.layers[ref.index[conv.inputs[0]]]
    return before if isinstance(before, L.ZeroPadding2D) else conv


def _symmetric(ref, convs, text, detail):
    patch = {}
    for conv in convs:
        patch[_pad_target(ref, conv).name] = lambda x: clone(x, pads=fixed_pads((1, 1, 1, 1)))
    return Patch("padding", text, patch, detail=detail)


def _padding_unseen(ref, layer, previous):
    """Symmetric pads on the stride-2 3x3 convs OTHER ran where nothing could be compared
    (between the last agreeing layer and ``layer``), and on every stride-2 3x3 conv (a
    framework-wide setting such as transformers' tf_padding=False), where one of them shows
    first at ``layer``: none once every one before it has been compared and agreed (pads there
    would break that agreement: not a cause to blame, even as the closest)."""
    s2 = [x for x in ref.layers if isinstance(x, (L.Conv2D, L.DepthwiseConv2D))
          and getattr(x, "kernel", 3) == 3 and x.stride == 2]
    lo = ref.index[previous] if previous else 0
    gap = [x for x in s2 if lo < ref.index[x.name] < ref.index[layer]]
    if not any(lo < ref.index[x.name] <= ref.index[layer] for x in s2):
        return []
    out = []
    if gap and len(gap) < len(s2):
        names = [x.name for x in gap]
        out.append(_symmetric(ref, gap, f"symmetric pads (1, 1, 1, 1) on the stride-2 convs before {layer} "
                              f"that could not be compared: {', '.join(names)}", {"layers": names, "pads": [1, 1, 1, 1]}))
    out.append(_symmetric(ref, s2, "symmetric pads (1, 1, 1, 1) on every stride-2 3x3 conv (PyTorch's "
                          "padding=1 where TensorFlow pads 'same')", {"layers": "all stride-2", "pads": [1, 1, 1, 1]}))
    return out


def _bn_epsilon(ref, layer, other_arr, base):
    unit = ref.unit_of(layer)
    bn = ref.reader_of(unit.name, L.BatchNormalization)
    if bn is None or bn.epsilon == 0.0:  # folded weights from OTHER: epsilon is invisible
        return []
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.weights)
    fitted = None
    if other_arr is not None and ref.index[layer] in (ref.index[bn.name], ref.index[bn.name] + 1):
        z = ref.trace(base, stop=unit.name)[unit.name] - mean
        if z.shape == np.shape(other_arr):  # (OTHER's of another shape: no fit, and no broadcast of beta)
            y = np.asarray(other_arr, np.float64) - beta
            m = (other_arr > 0) & (other_arr < 6) if layer != bn.name else np.ones(y.shape, bool)
            axes = tuple(range(z.ndim - 1))
            num = np.where(m, y * z, 0).sum(axis=axes)
            den = np.where(m, z * z, 0).sum(axis=axes)
            with np.errstate(divide="ignore", invalid="ignore"):
                eps_c = (gamma * den / num) ** 2 - var
            eps_c = eps_c[np.isfinite(eps_c) & (den > 0)]
            if eps_c.size:
                fitted = {"median": float(np.median(eps_c)), "p10": float(np.percentile(eps_c, 10)),
                          "p90": float(np.percentile(eps_c, 90)), "channels": int(eps_c.size)}
    values = [1e-5, 1e-4, 1e-6, 1e-2, 0.0]  # the usual ones first, so a confirmed one reads simply
    if fitted is not None and fitted["median"] >= 0:
        values.append(fitted["median"])
    out = []
    for e in values:
        if e == bn.epsilon or f"{e:.3g}" == f"{bn.epsilon:.3g}":  # no patch that reads as a no-op
            continue
        text = f"epsilon {e:.3g} instead of {bn.epsilon:g} in {bn.name}"
        if fitted is not None:
            text += (f" (fitted per channel: median {fitted['median']:.3g}, 10-90 % "
                     f"{fitted['p10']:.3g} .. {fitted['p90']:.3g} over {fitted['channels']} channels)")
        out.append(Patch("bn_epsilon", text, {bn.name: lambda x, e=e: clone(x, epsilon=e)},
                         detail={"layer": bn.name, "epsilon": e, "reference_epsilon": bn.epsilon,
                                 "fitted": fitted}))
    return out


def _pinned(a, end):
    """The value ``end`` (min or max) of ``a`` where at least two values sit exactly on it (a bound
    that clips), else None (nothing clipped there)."""
    v = end(a)
    return float(v) if np.count_nonzero(a == v) >= 2 else None


def _fitted_clip(ref, act, other_arr):
    """The activation clipped at the bounds OTHER's own output at ``act`` is pinned at (Clip(0, 4),
    a Clip with no lower bound, Keras's ReLU(max_value=4)), where they are not ReLU6's or ReLU's; not
    for a graph that rounds its tensors (its extremes are its grid's ends)."""
    if other_arr is None or getattr(ref, "quant", None) is not None or not np.size(other_arr):
        return []
    a = np.asarray(other_arr)
    if not np.all(np.isfinite(a)):
        return []
    lo, hi = _pinned(a, np.min), _pinned(a, np.max)
    if (lo, hi) in ((0.0, 6.0), (0.0, None), (None, None)) or (lo is not None and hi is not None and lo >= hi):
        return []
    text = f"Clip({'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'})"
    return [Patch("activation", f"{text} instead of ReLU6 in {act.name} (the bounds OTHER's output is pinned at)",
                  {act.name: lambda x: ClipReLU(x.name, x.inputs, lo, hi)},
                  detail={"layer": act.name, "activation": "clip", "min": lo, "max": hi})]


def _activation(ref, layer, other_arr=None):
    unit = ref.unit_of(layer)
    bn = ref.reader_of(unit.name, L.BatchNormalization)
    act = ref.reader_of(bn.name, L.ReLU) if bn is not None else None
    if act is None or ref.index[act.name] > ref.index[layer]:
        return []
    if act.max_value is None:  # a plain ReLU (DeepLabV3's head): OTHER may cap it
        return [Patch("activation", f"ReLU6 instead of ReLU (no cap) in {act.name}",
                      {act.name: lambda x: L.ReLU(x.name, x.inputs, max_value=6.0)},
                      detail={"layer": act.name, "activation": "relu6"})]
    relu = Patch("activation", f"ReLU (no cap at 6) instead of ReLU6 in {act.name}",
                 {act.name: lambda x: PlainReLU(x.name, x.inputs)}, detail={"layer": act.name, "activation": "relu"})
    return [relu] + (_fitted_clip(ref, act, other_arr) if act.name == layer else [])


def _unseen(ref, layer, previous, kind):
    """The layers of ``kind`` OTHER ran where nothing could be compared: after the last agreeing
    layer ``previous`` and before ``layer`` (a dump of block outputs only, as transformers'
    hidden states give, shows none of a block's batch norms or activations)."""
    lo = ref.index[previous] if previous else 0
    return [x for x in ref.layers[lo + 1:ref.index[layer]] if isinstance(x, kind)]


def _activation_unseen(ref, layer, previous):
    """ReLU instead of ReLU6 in each activation that could not be compared, one at a time."""
    seen = {p.detail["layer"] for p in _activation(ref, layer)}
    return [Patch("activation", f"ReLU (no cap at 6) instead of ReLU6 in {x.name} (not compared: "
                  f"OTHER shows nothing between {previous} and {layer})",
                  {x.name: lambda y: PlainReLU(y.name, y.inputs)},
                  detail={"layer": x.name, "activation": "relu", "unseen": True})
            for x in _unseen(ref, layer, previous, L.ReLU) if x.max_value == 6 and x.name not in seen] if previous else []


def _bn_epsilon_unseen(ref, layer, previous):
    """The usual other epsilons in each batch norm that could not be compared, one at a time (no
    fit: OTHER shows neither its input nor its output)."""
    if not previous:
        return []
    own = ref.reader_of(ref.unit_of(layer).name, L.BatchNormalization)
    out = []
    for bn in _unseen(ref, layer, previous, L.BatchNormalization):
        if bn is own or bn.epsilon == 0.0:
            continue
        for e in (1e-5, 1e-3):
            if f"{e:.3g}" != f"{bn.epsilon:.3g}":
                out.append(Patch("bn_epsilon", f"epsilon {e:.3g} instead of {bn.epsilon:g} in {bn.name} (not "
                                 f"compared: OTHER shows nothing between {previous} and {layer})",
                                 {bn.name: lambda x, e=e: clone(x, epsilon=e)},
                                 detail={"layer": bn.name, "epsilon": e, "reference_epsilon": bn.epsilon,
                                         "fitted": None, "unseen": True}))
    return out


def _layout(ref, layer, first_visible):
    if ref.unit_of(layer) is not ref.layers[1] and not first_visible:
        return []
    out = []
    for p in itertools.permutations(range(3)):
        if p != (0, 1, 2):
            order = "".join(CHANNEL_NAMES[i] for i in p)
            out.append(Patch("layout", f"input channels in the order {order}",
                             input_fn=lambda x, p=p: x[..., list(p)], detail={"channels": order}))
    n, h, w, c = ref.x.shape
    if h == w:
        out.append(Patch("layout", "input height and width transposed",
                         input_fn=lambda x: x.transpose(0, 2, 1, 3), detail={"transform": "transpose_hw"}))
    out.append(Patch("layout", "the NCHW input buffer read as NHWC",
                     input_fn=lambda x: x.transpose(0, 3, 1, 2).reshape(x.shape),
                     detail={"transform": "nchw_buffer_read_as_nhwc"}))
    out.append(Patch("layout", "an NHWC input buffer read as NCHW",
                     input_fn=lambda x: x.reshape(n, c, h, w).transpose(0, 2, 3, 1),
                     detail={"transform": "nhwc_buffer_read_as_nchw"}))
    return out


IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def _clean(v, width):
    """``v`` rounded to the nearest of 0, a whole number or two decimals where that moves it by
    under 0.1 % of ``width`` (a fitted range end like 1.7e-06 of [0, 255] reads 0)."""
    for digits in (0, 1, 2):
        r = round(float(v), digits)
        if abs(r - v) <= 1e-3 * width:
            return r + 0.0
    return float(v)


def _affine(a, b, how, expects=None):
    """The patch of OTHER mapping its input x to a*x + b; ``expects``: the input range OTHER
    wants, named (a usual scaling), else derived from a and b."""
    a, b = np.broadcast_to(np.asarray(a, np.float64), (3,)), np.broadcast_to(np.asarray(b, np.float64), (3,))
    lo, hi = (-1 - b) / a, (1 - b) / a
    lo, hi = (np.array([_clean(v, abs(h - l_)) for v, l_, h in zip(ends, lo, hi)]) for ends in (lo, hi))
    if expects is None:
        expects = (f"[{lo[0]:.4g}, {hi[0]:.4g}]" if np.allclose(lo, lo[0]) and np.allclose(hi, hi[0])
                   else ", ".join(f"{ch} [{l_:.4g}, {h_:.4g}]" for ch, l_, h_ in zip(CHANNEL_NAMES, lo, hi)))
    ab = f"a = {np.array2string(a, precision=4)}, b = {np.array2string(b, precision=4)}"
    return Patch("preprocessing",
                 (f"OTHER maps its input x to a*x + b with {ab} ({how}): it expects input in {expects}, "
                  if how else f"OTHER expects input in {expects}: it maps its input x to a*x + b with {ab}, ")
                 + "where the reference takes [-1, 1]",
                 input_fn=lambda x: x * a + b,
                 detail={"scale": a.tolist(), "offset": b.tolist(), "expects_range": [lo.tolist(), hi.tolist()]})


def _preprocessing_named(ref, layer, first_visible):
    """The usual input scalings, tried by name (at the stem before the fitted map, so that a
    confirmed one reads simply) where OTHER's first divergent layer is its first visible one."""
    if not first_visible:
        return []
    # [0, 1] mapped by 2u - 1; [0, 255] by u / 127.5 - 1; torchvision's (u - mean) / std on [0, 1]
    out = [_affine(2.0, -1.0, None, "[0, 1]"), _affine(1 / 127.5, -1.0, None, "[0, 255]"),
           _affine(1 / IMAGENET_STD, -IMAGENET_MEAN / IMAGENET_STD, None,
                   "[0, 1] and normalizes each channel by the ImageNet mean/std itself (as torchvision does)")]
    own = getattr(ref, "input_affine", None)
    if own is not None:  # OTHER's own arithmetic on its input, read from its graph: the exact map
        out.append(_affine(*own, "its own arithmetic on the input before its first layer, read from its "
                           "graph: a PrePostProcessor's mean/scale, an export's (x - mean) / std"))
    return out


def _preprocessing(ref, layer, other_arr, base):
    """Fit OTHER's stem output as the reference stem applied to a*x + b (per channel a, b); none
    where OTHER's graph shows its own map (``ref.input_affine``: a candidate of its own)."""
    if ref.unit_of(layer) is not ref.layers[1] or other_arr is None or getattr(ref, "input_affine", None) is not None:
        return []
    layers = ref.patched_layers(base)
    conv, bn = layers[1], layers[2]
    if ref.index[layer] > 3:
        return []

    def g(u):
        return bn(conv(u))

    x = ref.x
    zero = g(np.zeros_like(x))
    feats = []
    for c in range(3):
        xc = np.zeros_like(x)
        xc[..., c] = x[..., c]
        oc = np.zeros_like(x)
        oc[..., c] = 1.0
        feats += [g(xc) - zero, g(oc) - zero]
    y = np.asarray(other_arr, np.float64)
    if y.shape != zero.shape:
        return []
    m = ((y > 0) & (y < 6)) if layer != bn.name else np.ones(y.shape, bool)
    if m.sum() < 12:
        return []
    A = np.stack([f[m] for f in feats], axis=1)
    coef, *_ = np.linalg.lstsq(A, (y - zero)[m], rcond=None)
    a, b = coef[0::2], coef[1::2]
    out = []
    for digits in (3, None):
        aa, bb = (np.round(a, digits), np.round(b, digits)) if digits is not None else (a, b)
        if np.allclose(aa, 1) and np.allclose(bb, 0):
            continue
        if not np.all(np.abs(aa) > 1e-6):
            continue
        out.append(_affine(aa, bb, "fitted per channel on the stem's output"))
    return out


def _round(w, kind):
    w = np.asarray(w, np.float64)
    if kind == "float16":
        with np.errstate(over="ignore"):  # a weight past float16's range is inf: no candidate (api's score)
            return w.astype(np.float16).astype(np.float64)
    # bfloat16 keeps 8 significant bits: round the float64 value to them once, ties to even (going
    # through float32 first would round twice, and a weight near a tie would land an ulp away)
    m, e = np.frexp(w)
    return np.ldexp(np.round(m * 256.0) / 256.0, e)


def _ulp(r, kind):
    """One step of ``kind`` (float16 / bfloat16) at the values ``r``."""
    a = np.abs(np.asarray(r, np.float64))
    m, e = np.frexp(a)
    # frexp(0) is (0, 0): a step of 2**-11 there, where the grid's is its smallest subnormal
    step = np.where(a > 0, np.ldexp(1.0, e - (11 if kind == "float16" else 8)), 0.0)
    return np.maximum(step, 2.0 ** -24 if kind == "float16" else 2.0 ** -133)


def _graph_side(exact, kind, theirs):
    """``exact`` rounded to ``kind``, each value taking OTHER's own (``theirs``) where that is on
    the ``kind`` grid and within one step of the exact value: the other neighbour of a value
    near halfway, where OTHER rounded another computation of it (a batch norm folded in float32,
    then rounded) as the int8 path takes the graph's side at a tie."""
    r = _round(exact, kind)
    if theirs is None or np.shape(theirs) != np.shape(r):
        return r
    theirs = np.asarray(theirs, np.float64)
    take = (_round(theirs, kind) == theirs) & (np.abs(theirs - exact) < _ulp(r, kind))
    return np.where(take, theirs, r)


def _precision(ref):
    out = []
    convs = [x for x in ref.layers if isinstance(x, (L.Conv2D, L.DepthwiseConv2D))]
    own = getattr(ref, "other_weights", None) or {}
    for kind in ("float16", "bfloat16"):
        def rounded_weights(layer, kind=kind):
            ws = [_round(w, kind) for w in layer.weights]
            theirs = own.get(layer.name)
            if theirs is not None and isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Dense)):
                k = np.asarray(layer.weights[0], np.float64)
                flat = k[..., 0] if isinstance(layer, L.DepthwiseConv2D) else k
                side = _graph_side(flat, kind, theirs[0])
                ws[0] = side[..., None] if isinstance(layer, L.DepthwiseConv2D) else side
                if isinstance(layer, L.Dense) and len(ws) > 1:
                    ws[1] = _graph_side(layer.weights[1], kind, theirs[1])
            return clone(layer, weights=[w.astype(layer.weights[0].dtype) for w in ws])
        plain = {x.name: rounded_weights for x in ref.layers if x.weight_shapes()}
        out.append(Patch("precision", f"every weight rounded to {kind}", plain,
                         detail={"weights": kind, "folded": False}))
        folded = {}
        for conv in convs:
            bn = ref.reader_of(conv.name, L.BatchNormalization)
            if bn is None:  # a conv with a bias of its own (DeepLabV3's logits): nothing folds into it
                folded[conv.name] = plain[conv.name]
                continue
            k = conv.weights[0]
            w, bias = fold_batchnorm(k[..., 0] if isinstance(conv, L.DepthwiseConv2D) else k,
                                     *bn.weights, eps=bn.epsilon)
            theirs = own.get(conv.name, (None, None))
            w = _graph_side(w, kind, theirs[0])
            w = w[..., None] if isinstance(conv, L.DepthwiseConv2D) else w
            ones = np.ones_like(bias)
            folded[conv.name] = lambda layer, w=w: clone(layer, weights=[w])
            folded[bn.name] = lambda layer, bias=_graph_side(bias, kind, theirs[1]), ones=ones: clone(
                layer, epsilon=0.0, weights=[ones, bias, np.zeros_like(ones), ones])
        for x in ref.layers:
            if isinstance(x, L.Dense):
                folded[x.name] = plain[x.name]
        out.append(Patch("precision", f"batch norms folded into the convolutions, then every weight rounded to {kind}",
                         folded, detail={"weights": kind, "folded": True}))
        # a model storing some layers' weights so (a TFLite file with float16 DEQUANTIZEs for some):
        # those whose own weights all lie on the grid, their batch norms folded with them
        stored = {x.name for x in convs + [x for x in ref.layers if isinstance(x, L.Dense)]
                  if own.get(x.name) is not None and np.all(_round(own[x.name][0], kind) == own[x.name][0])}
        if 0 < len(stored) < len(own):
            bns = {getattr(ref.reader_of(c, L.BatchNormalization), "name", None) for c in stored}
            out.append(Patch("precision", f"batch norms folded into the convolutions, then the weights of the "
                             f"{len(stored)} of {len(own)} layers whose own weights are {kind} values rounded to it",
                             {k: v for k, v in folded.items() if k in stored | bns},
                             detail={"weights": kind, "folded": True, "layers": len(stored)}))
        computing = rounded_compute(ref, kind, lambda y, kind=kind: _round(y, kind), out[-1])
        if computing is not None:
            out.append(computing)
            out.append(rounded_activations(ref, kind, lambda y, kind=kind: _round(y, kind)))
    return out + int8_patches(ref)


def _class_offset(ref, layer, other_shape):
    if layer != "predictions" or other_shape is None or len(other_shape) != 2:
        return []
    k_other, k_ref = other_shape[1], ref.model.classes
    if ref.layers[ref.index[layer]].activation == "softmax":  # probabilities: the kept classes sum to 1
        return [Patch(p.cause, p.text, other_fn={k: _renormalized(f) for k, f in p.other_fn.items()},
                      ref_fn={k: _renormalized(f) for k, f in p.ref_fn.items()}, detail=p.detail)
                for p in _class_offsets(k_other, k_ref, layer)]
    return _class_offsets(k_other, k_ref, layer)


def _renormalized(f):
    def g(a):
        a = f(a)
        return a / a.sum(axis=1, keepdims=True)
    return g


def _class_offsets(k_other, k_ref, layer):
    if k_other == k_ref + 1:
        return [Patch("class_offset", f"OTHER has {k_other} classes: its class 0 is a background class, "
                      "Keras class i is OTHER's class i + 1", other_fn={layer: lambda a: a[:, 1:]},
                      detail={"other_classes": k_other, "shift": 1}),
                Patch("class_offset", f"OTHER has {k_other} classes: an extra last class",
                      other_fn={layer: lambda a: a[:, :-1]}, detail={"other_classes": k_other, "shift": 0})]
    if k_other + 1 == k_ref:
        return [Patch("class_offset", f"the reference has {k_ref} classes, OTHER {k_other}: the reference's class 0 "
                      "is a background class OTHER does not have (dropped), OTHER's class i is the reference's i + 1",
                      ref_fn={layer: lambda r: r[:, 1:]}, detail={"reference_classes": k_ref, "shift": 1}),
                Patch("class_offset", f"the reference has {k_ref} classes, OTHER {k_other}: the reference's last "
                      "class dropped", ref_fn={layer: lambda r: r[:, :-1]},
                      detail={"reference_classes": k_ref, "shift": 0})]
    if k_other == k_ref:
        return [Patch("class_offset", "OTHER's classes shifted by one (Keras class i is OTHER's i + 1)",
                      other_fn={layer: lambda a: a[:, 1:]}, ref_fn={layer: lambda r: r[:, :-1]},
                      detail={"other_classes": k_other, "shift": 1})]
    return []


def _sigmoid(r):
    return 0.5 * (1.0 + np.tanh(0.5 * r))  # 1 / (1 + exp(-r)), with no overflow


def _head(ref, layer, other_arr, base):
    """What OTHER may apply to its logits where the reference compares logits: sigmoid, softmax,
    a scale (fitted: a temperature, or weights and bias scaled alike)."""
    dense = ref.layers[ref.index[layer]]
    if not isinstance(dense, L.Dense) or dense.activation is not None or other_arr is None:
        return []
    out = [Patch("head", "OTHER applies sigmoid after the logits", ref_fn={layer: _sigmoid},
                 detail={"applies": "sigmoid"}),
           Patch("head", "OTHER applies softmax after the logits", ref_fn={layer: softmax},
                 detail={"applies": "softmax"})]
    r = ref.trace(base, stop=layer)[layer]
    o = np.asarray(other_arr, np.float64)
    if o.shape == r.shape and np.vdot(r, r) > 0:
        s = float(np.vdot(o, r) / np.vdot(r, r))
        for v in dict.fromkeys((float(f"{s:.3g}"), s)):
            if v != 1.0 and v != 0.0:
                out.append(Patch("head", f"OTHER scales the logits by {v:.4g}", ref_fn={layer: lambda a, v=v: a * v},
                                 detail={"applies": "scale", "scale": v}))
    return out


def _pooling(ref, layer, previous):
    """The other global pooling (max for average, or average for max) at ``layer`` or, where
    nothing between was compared, at the pooling between ``previous`` and ``layer``."""
    x = ref.layers[ref.index[layer]]
    pools = [x] if isinstance(x, L.GlobalAveragePooling2D) else (
        _unseen(ref, layer, previous, L.GlobalAveragePooling2D) if previous else [])
    out = []
    for p in pools:
        theirs, ours, swap = (("average", "max", L.GlobalAveragePooling2D) if isinstance(p, L.GlobalMaxPooling2D)
                              else ("max", "average", L.GlobalMaxPooling2D))
        out.append(Patch("pooling", f"OTHER's global pooling takes the {theirs} where the reference's {p.name} "
                         f"takes the {ours}", {p.name: lambda y, swap=swap: swap(y.name, y.inputs)},
                         detail={"layer": p.name, "other_pooling": theirs}))
    return out


def _missing_layer(ref, layer, previous):
    """The Keras layers OTHER has no counterpart of (``ref.unmapped``) between the last layer
    compared and ``layer``, each left out of the reference: its output is one of its inputs."""
    lo = ref.index[previous] if previous else 0
    out = []
    for u in getattr(ref, "unmapped", None) or []:
        name = u["layer"]
        if name not in ref.index or not lo < ref.index[name] < ref.index[layer]:
            continue
        x = ref.layers[ref.index[name]]
        for keep in reversed(range(len(x.inputs))):  # an Add's residual branch is its second input
            out.append(Patch("missing_layer",
                             f"{name} left out of the reference ({u['why']}): its output taken as {x.inputs[keep]}",
                             {name: lambda layer, keep=keep: Bypass(layer, keep)},
                             detail={"layer": name, "kept_input": x.inputs[keep]}))
    return out


def candidates(ref, layer, other_arr, other_shape, base=NO_PATCH, skip=(), previous=None):
    """Every suspected defect that could show first at ``layer``, as patches on top of ``base``;
    ``previous`` is the last layer compared before it (agreeing), None where it is the first."""
    out = []
    first_visible = previous is None
    if "missing_layer" not in skip:
        out += _missing_layer(ref, layer, previous)
    if "class_offset" not in skip:
        out += _class_offset(ref, layer, other_shape)
    if "pooling" not in skip:
        out += _pooling(ref, layer, previous)
    if "head" not in skip:
        out += _head(ref, layer, other_arr, base)
    if "padding" not in skip:
        out += _padding(ref, layer, other_shape, base) + _padding_unseen(ref, layer, previous)
    if "bn_epsilon" not in skip:
        out += _bn_epsilon(ref, layer, other_arr, base) + _bn_epsilon_unseen(ref, layer, previous)
    if "activation" not in skip:
        out += _activation(ref, layer, other_arr) + _activation_unseen(ref, layer, previous)
    if "layout" not in skip:
        out += _layout(ref, layer, first_visible)
    if "preprocessing" not in skip:
        out += _preprocessing_named(ref, layer, first_visible) + _preprocessing(ref, layer, other_arr, base)
    if "precision" not in skip:
        out += _precision(ref)
    return out + [p for p in weight_patches(ref) if p.cause not in skip]  # the last resort: OTHER's own weights


CLOSEST = 0.9  # a candidate not confirmed is shown as the closest only where it cuts the error by 10 %


def diagnose(ref, layer, score, other_arr, other_shape, previous=None, progress=None, base=NO_PATCH):
    """The diagnosis of ``layer``: ``score(patch)`` gives OTHER's (ratio, rel_l2) at ``layer``
    against the reference with ``patch`` applied; a patch is confirmed when the ratio is within
    the factor (``score.factor``).  ``base``: defects already confirmed at earlier layers, kept
    applied while this layer is diagnosed."""
    def full(p):
        return p if base is NO_PATCH else base + p

    before = score(base)
    tried = 0

    def run(patches):
        nonlocal tried
        out = []
        for p in patches:
            tried += 1
            if progress:
                progress(f"diagnosing {layer}: {p.cause}")
            out.append((score(full(p)), p))
        return out

    def evidence(p, after):
        return {"cause": p.cause, "applied": p.text, "layer": layer,
                "before": {"rel_l2": before[1], "ratio": before[0]},
                "after": {"rel_l2": after[1], "ratio": after[0]}, "detail": p.detail}

    rounded = ("precision",) if "weights" in base.detail else ()  # rounding already applied: not again
    scored = run(candidates(ref, layer, other_arr, other_shape, base=base, previous=previous, skip=rounded))
    ok = [s for s in scored if s[0][0] <= score.factor]  # in the candidates' order: simplest first
    if ok:
        (after, p) = ok[0]
        return {"layer": layer, "cause": p.cause, "also": [], "evidence": [evidence(p, after)],
                "patch": full(p), "tried": tried,
                "alternatives": [(evidence(q, a), full(q)) for a, q in ok[1:] if q.cause == p.cause]}
    finite = [s for s in scored if s[0][0] is not None and np.isfinite(s[0][0])]
    if finite and np.isfinite(before[0]) and min(s[0][0] for s in finite) > CLOSEST * before[0]:
        finite = []  # nothing tried reduced the error: no closest candidate to show
    if finite:
        (after1, p1) = min(finite, key=lambda s: s[0][0])
        if before[0] is None or after1[0] < before[0] / 2:
            seconds = candidates(ref, layer, other_arr, other_shape, base=full(p1), skip=(p1.cause,) + rounded,
                                 previous=previous)
            scored2 = [(s, p2) for (s, _), p2 in zip(run([p1 + p2 for p2 in seconds]), seconds)]
            ok2 = [s for s in scored2 if s[0][0] <= score.factor]
            if ok2:
                (after2, p2) = ok2[0]
                both = p1 + p2
                alone2 = min((s[0] for s, q in scored if q.cause == p2.cause), default=None)
                first, rest = (p1.cause, p2.cause) if alone2 is None or after1[0] <= alone2 else (p2.cause, p1.cause)
                if first == "precision":  # rounding is not what the user must fix: the defect found with it leads
                    first, rest = rest, first
                both.cause = first
                return {"layer": layer, "cause": first, "also": [rest],
                        "evidence": [evidence(both, after2)], "patch": full(both), "tried": tried}
        return {"layer": layer, "cause": "unexplained", "also": [],
                "evidence": [dict(evidence(p1, after1), cause="unexplained",
                                  closest=p1.cause)], "patch": None, "tried": tried}
    return {"layer": layer, "cause": "unexplained", "also": [], "evidence": [], "patch": None, "tried": tried}
