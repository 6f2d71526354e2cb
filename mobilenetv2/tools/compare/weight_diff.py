"""OTHER's own weights against the reference's, where both are known (``--weights`` given and
OTHER stores its weights): each conv's kernel and bias compared after the batch norms are folded
on both sides as the reference folds them (quant.folded), the reference's kernel first rounded
onto OTHER's int8 grid where OTHER is quantized (as quant.py's int8 reference rounds it).  Two
causes come of it, each a patch the diagnosis confirms as any other (OTHER then agrees):

- ``bias_correction``: a quantized OTHER whose kernels are the reference's rounded onto its grid
  but whose biases moved, as ``nncf.quantize`` does by default (its bias correction shifts each
  bias by the mean error rounding the kernel put on that layer's output): the reference with
  OTHER's own biases in those layers (on top of the int8 reference: ``precision``);
- ``different_weights``: kernels that are not the reference's beyond rounding (or a float OTHER's
  biases that moved): the reference with OTHER's own weights in those layers.
"""
from dataclasses import dataclass

import numpy as np

from mobilenetv2.network import layers as L
from mobilenetv2.tools.compare.mapping import keras_convs
from mobilenetv2.tools.compare.quant import folded, own_int8_patch, rounded_as_other, set_folded
from mobilenetv2.tools.compare.reference import Patch, clone

FLOAT_ROUNDING = 2.0 ** -10  # relative: a weight stored as float16 is within 2^-11 of its value
TINY = 2.0 ** -24            # absolute: float16's smallest step (its subnormals)
SHOWN = 3                    # layers named in a patch's text (the JSON lists them all)


@dataclass
class LayerDiff:
    layer: str            # the Keras conv / dense layer
    kernel_off: int       # kernel values further from the reference's than rounding
    shifted: int          # bias channels further from the reference's than rounding
    max_shift: float      # the largest |OTHER's bias - the reference's| (folded)
    steps: object         # max_shift over the bias scale (input scale x weight scale), None where unknown
    of_max_bias: float    # max_shift over the largest |bias| of the reference's layer
    kernel: np.ndarray    # OTHER's folded kernel (a depthwise one as (kh, kw, C)) and bias
    bias: np.ndarray
    layers: tuple         # the reference's (conv or dense, its batch norm or None)
    own: tuple = None     # OTHER's own (conv or dense, its batch norm or None), unfolded

    def report(self):
        return {"layer": self.layer, "kernel_values": int(self.kernel.size), "kernel_values_off": self.kernel_off,
                "bias_channels_shifted": self.shifted,
                "max_bias_shift": self.max_shift, "max_bias_shift_in_bias_scales": self.steps,
                "max_bias_shift_of_max_bias": self.of_max_bias}


def weight_diffs(ref):
    """{Keras layer: LayerDiff} of the layers whose weights differ from OTHER's own
    (``ref.other_model``, OTHER's weights as a MobileNetV2; None where not both are known)."""
    if getattr(ref, "_weight_diffs", None) is None:
        ref._weight_diffs = _diffs(ref) if getattr(ref, "other_model", None) is not None else {}
    return ref._weight_diffs


def _diffs(ref):
    info = ref.quant
    grids = info.weights if info is not None else {}
    theirs = {x.name: x for x in ref.other_model.layers}
    out = {}
    pairs = [(conv, ref.reader_of(conv.name, L.BatchNormalization)) for conv in keras_convs(ref.layers)]
    pairs += [(x, None) for x in ref.layers if isinstance(x, L.Dense) and x.name in theirs]  # (a head OTHER has)
    for conv, bn in pairs:
        if conv.name not in theirs or (bn is not None and bn.name not in theirs):
            return {}  # another graph (a DeepLabV3 checkpoint's): not compared
        w, b = folded(conv, bn)
        w2, b2 = folded(theirs[conv.name], None if bn is None else theirs[bn.name])
        if w.shape != w2.shape or b.shape != b2.shape:
            if isinstance(conv, L.Dense):  # another class count (1001, TF-slim's): a head class_offset names,
                continue                   # the convolutions still compared
            return {}
        wq, bq, own = grids.get(conv.name, (None, None, None))
        if wq is not None:
            rounded = rounded_as_other(w, wq, own)
            if rounded is None:
                return {}
            step = np.broadcast_to(np.asarray(wq.scale, np.float64).reshape(-1), (w.shape[-1],))
            off = np.abs(w2 - rounded) > 0.5 * step
        else:
            off = np.abs(w2 - w) > FLOAT_ROUNDING * np.abs(w) + TINY
        scale = _bias_scale(ref, info, conv, wq, bq, b.size)
        if bq is not None:
            tol = 0.5 * np.broadcast_to(np.asarray(bq.scale, np.float64).reshape(-1), b.shape) + TINY
        else:
            tol = FLOAT_ROUNDING * np.abs(b) + TINY
        shift = np.abs(b2 - b)
        moved = shift > tol
        if off.any() or moved.any():
            big = float(np.max(np.abs(b)))
            out[conv.name] = LayerDiff(
                conv.name, int(off.sum()), int(moved.sum()), float(shift.max()),
                None if scale is None else float(np.max(shift / scale)),
                float(shift.max() / big) if big > 0 else None, w2, b2, (conv, bn),
                (theirs[conv.name], None if bn is None else theirs[bn.name]))
    return out


def _bias_scale(ref, info, conv, wq, bq, n):
    """The scale of a conv's (or the dense layer's) bias on an integer grid, per channel: the
    bias's own grid where OTHER stores one (int32), else its input's scale times its kernel's (what
    a quantizer puts it on); None where OTHER rounds neither."""
    if bq is not None:
        return np.broadcast_to(np.asarray(bq.scale, np.float64).reshape(-1), (n,))
    if info is None or wq is None:
        return None
    src = ref.layers[ref.index[conv.inputs[0]]]
    if isinstance(src, L.ZeroPadding2D):
        src = ref.layers[ref.index[src.inputs[0]]]
    grid = info.input if src is ref.layers[0] else info.acts.get(src.name)
    if grid is None or np.size(grid.scale) != 1:
        return None
    return float(grid.scale) * np.broadcast_to(np.asarray(wq.scale, np.float64).reshape(-1), (n,))


def weight_patches(ref):
    """The patches of OTHER's own weights where they differ from the reference's: ``bias_correction``
    (a quantized OTHER's moved biases, its kernels the reference's rounded) and ``different_weights``."""
    diffs = weight_diffs(ref)
    quantized = ref.quant is not None and bool(ref.quant.weights)
    base = own_int8_patch(ref) if quantized and diffs else None
    corrected = [d for d in diffs.values() if quantized and not d.kernel_off]
    different = [d for d in diffs.values() if not quantized or d.kernel_off]
    out = []
    if corrected:
        worst = max(corrected, key=lambda d: (d.steps is not None, d.steps or d.of_max_bias or 0))
        how = (f"{worst.steps:.3g} x its bias scale" if worst.steps is not None else
               f"{100 * (worst.of_max_bias or 0):.3g} % of its largest bias")
        out.append(_patch(base, "bias_correction", corrected,
                          f"OTHER's own biases in {_names(corrected)}, whose kernels are the reference's rounded "
                          f"onto OTHER's int8 grid (largest shift: {worst.layer}, {how}): bias correction, as "
                          "NNCF's quantize applies by default; compare without --weights to check OTHER "
                          "against its own weights"))
    if different:
        out.append(_patch(base, "different_weights", different,
                          f"OTHER's own weights in {_names(different)}, whose kernels differ from the "
                          "reference's beyond rounding" + ("" if quantized else " (or their biases)") +
                          ": different weights"))
    return out


def _names(diffs):
    names = [d.layer for d in diffs]
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return f"{len(names)} layer{'s' * (len(names) > 1)} ({', '.join(names[:SHOWN])}{more})"


def _patch(base, cause, diffs, text):
    """The reference with OTHER's own folded weights in the layers of ``diffs`` (a kernel within
    rounding of the reference's is the same grid values the int8 reference rounds it to), on top
    of the int8 reference ``base`` where OTHER is quantized (else None)."""
    layers = {}
    for d in diffs:
        x, bn = d.layers
        if isinstance(x, L.Dense):
            layers[x.name] = lambda layer, w=d.kernel, b=d.bias: clone(
                layer, weights=[a.astype(layer.weights[0].dtype) for a in (w, b)])
        elif base is None and d.own is not None and bn is not None and d.own[1].epsilon != 0:
            # a float OTHER whose batch norm is not folded (a Keras model, an ONNX BatchNormalization
            # node): its own conv and batch norm as they are (the reference's epsilon kept), so that
            # the conv's output it shows before its batch norm is its own; folded into the conv,
            # that output would be the batch norm's
            for mine, theirs in zip((x, bn), d.own):
                layers[mine.name] = lambda layer, t=theirs: clone(layer, weights=[
                    np.asarray(a).astype(layer.weights[0].dtype) for a in t.weights])
        else:
            set_folded(layers, x, bn, d.kernel, d.bias)
    local = Patch(cause, text, layers, detail={"layers": [d.report() for d in diffs]})
    if base is None:
        return local
    both = base + local  # OTHER's weights where they differ, the int8 reference's everywhere else
    both.cause = cause
    return both
