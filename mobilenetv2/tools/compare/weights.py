"""The reference's weights: named by the user (``--weights``) or read from OTHER.

Read from OTHER, a convolution with its batch norm folded in (conv + bias, the form converters
write) becomes a float64 MobileNetV2 layer pair whose batch norm adds the bias and nothing else:
gamma = 1, beta = bias, moving mean = 0, moving variance = 1 and that layer's epsilon set to 0,
so the scale ``gamma / sqrt(var + eps)`` is exactly 1.0 and ``x * 1 + bias`` is exact in any
precision.  A separate BatchNormalization node's own statistics are used as they are, with
Keras's epsilon (1e-3): an epsilon written into OTHER's node is then a defect compare can see;
a folded one cannot be seen (the fold already multiplied it in).
"""
import dataclasses
import os

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network import arch
from mobilenetv2.errors import WeightsError
from mobilenetv2.network import layers as L
from mobilenetv2.model_options import read_weights
from mobilenetv2.tools.compare.errors import CompareError
from mobilenetv2.tools.compare.mapping import check_convs, head_classes, keras_convs
from mobilenetv2.network.variants import variant_name

OFFICIAL_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


def _model(alpha, hw, include_top, classes, dtype, pooling=None, top_pooling="global"):
    from mobilenetv2 import MobileNetV2
    return MobileNetV2((hw[0], hw[1], 3), alpha=alpha, include_top=include_top, weights=None,
                       classes=classes, classifier_activation=None, dtype=dtype,
                       pooling=None if include_top else pooling,
                       top_pooling=top_pooling if include_top else "global")


def infer_alpha(other):
    convs = [n for n in other.nodes if n.op == "conv"]
    for alpha in OFFICIAL_ALPHAS:
        if check_convs(convs, arch.build_layers(alpha, include_top=False)) is None:
            return alpha
    why = check_convs(convs, arch.build_layers(1.0, include_top=False))
    raise CompareError(f"{other.source!r} does not have the convolutions of a MobileNetV2 with any "
                       f"alpha in {OFFICIAL_ALPHAS} ({why} at alpha 1.0); for another graph of MobileNetV2 "
                       "(a DeepLabV3) name its checkpoint folder with --weights")


def from_other(other, hw, include_top, pooling=None, top_pooling="global"):
    """(float64 model, float32 model, description, cannot-detect note) with OTHER's own weights;
    ``top_pooling`` as MobileNetV2's (TF-slim's '7x7' head where OTHER has it)."""
    alpha = infer_alpha(other)
    convs = [n for n in other.nodes if n.op == "conv"]
    dense = [n for n in other.nodes if n.op == "dense"][-1:] if include_top else []
    computed = next((n for n in convs + dense if n.attrs.get("weight") is None), None)
    if computed is not None:
        where = computed.attrs.get("computed") or f"{computed.op} {(computed.name or computed.output)[:80]!r}"
        raise CompareError(f"{other.source!r}: {where}: weights computed at run time are not read; "
                           "give the reference weights with --weights")
    classes = head_classes(other) if include_top else None
    note = ""
    if include_top and classes == 1001:
        note = ("; OTHER's head has 1001 classes (class 0 TF-slim's background class): the reference "
                "keeps all 1001 as OTHER's weights have them")
    models = []
    folded = 0
    for dtype in ("float64", "float32"):
        m = _model(alpha, hw, include_top, classes or 1000, dtype, pooling, top_pooling)
        consumers = {}
        for n in other.nodes:
            for i in n.inputs:
                consumers.setdefault(i, []).append(n)
        for node, layer in zip(convs, keras_convs(m.layers)):
            w = node.attrs["weight"]
            kernel = w.transpose(2, 3, 0, 1) if isinstance(layer, L.DepthwiseConv2D) else w.transpose(2, 3, 1, 0)
            layer.set_weights([kernel], m.dtype)
            bn = next(x for x in m.layers if x.inputs == (layer.name,))
            bias = node.attrs.get("bias")
            bias = np.zeros(bn.channels) if bias is None else np.asarray(bias, np.float64)
            scale, bias = _affine_after(node, consumers, bias)
            if scale is not None:
                kernel = kernel * (scale[:, None] if isinstance(layer, L.DepthwiseConv2D) else scale)  # BN as Mul/Add: folded here
                layer.set_weights([kernel], m.dtype)
            nxt = consumers.get(node.output, [])
            if len(nxt) == 1 and nxt[0].op == "bn" and nxt[0].attrs.get("gamma") is not None:
                a = nxt[0].attrs
                bn.set_weights([a["gamma"], a["beta"], np.asarray(a["mean"], np.float64) - bias, a["var"]], m.dtype)
            else:
                bn.epsilon = 0.0
                bn.set_weights([np.ones(bn.channels), bias, np.zeros(bn.channels), np.ones(bn.channels)], m.dtype)
                folded += dtype == "float64"
        if include_top:
            dense = [n for n in other.nodes if n.op == "dense"][-1]
            w = dense.attrs["weight"]
            b = dense.attrs.get("bias")
            b = np.zeros(dense.attrs["weight"].shape[0]) if b is None else np.asarray(b, np.float64)
            scale, b = _affine_after(dense, consumers, b)  # MatMul + Add (tf2onnx)
            if scale is not None:
                w = w * scale[:, None]
            m.get_layer("predictions").set_weights([w.T, b], m.dtype)
        models.append(m)
    desc = (f"read from OTHER ({other.kind}): MobileNetV2 alpha={alpha:g}, {len(convs)} convolutions, "
            f"{folded} with the batch norm folded in")
    # a converter folds an input channel swap into the stem (OpenVINO's PrePostProcessor convert_color)
    swap = ", or an input channel order (BGR) folded into the first conv's weights"
    cannot = ("weights read from OTHER cannot show a defect baked into them: a wrong batch-norm "
              "epsilon folded into the conv weights, weights already rounded (float16/bfloat16/int8)" + swap)
    if folded == 0:
        cannot = "weights read from OTHER cannot show weights already rounded (float16/bfloat16/int8) in them" + swap
    return models[0], models[1], desc + note, cannot


def own_model(other, hw, include_top, pooling=None, top_pooling="global"):
    """OTHER's own weights as a float64 MobileNetV2 (as ``from_other`` reads them), or None where
    they cannot be read so (computed at run time, not a MobileNetV2 of an official alpha, NaN or
    inf among them: the layer-by-layer comparison against the given weights shows those)."""
    try:
        return from_other(other, hw, include_top, pooling, top_pooling)[0]
    except (CompareError, WeightsError):
        return None


def _affine_after(conv, consumers, bias):
    """(per-channel scale or None, bias) of the Mul/Add/Sub/Div-by-constant chain after a conv
    (through Transpose/Identity): a batch norm a converter wrote out as arithmetic."""
    c = bias.size
    scale, t = None, conv.output
    while True:
        nxt = consumers.get(t, [])
        if len(nxt) != 1:
            break
        n = nxt[0]
        if n.op == "reshape" and n.attrs.get("kind") in ("Transpose", "Identity"):
            t = n.output
            continue
        if n.op != "affine" or n.attrs["value"].size not in (1, c):
            break
        v = n.attrs["value"].reshape(-1) * np.ones(c)
        kind = n.attrs["kind"]
        if kind in ("Sub", "Div") and not n.attrs["data_first"]:
            break
        if kind in ("Mul", "Div"):
            f = v if kind == "Mul" else 1.0 / v
            scale = f if scale is None else scale * f
            bias = bias * f
        else:
            bias = bias + (v if kind == "Add" else -v)
        t = n.output
    return scale, bias


def _copy(model, dtype, hw, include_top, pooling=None, top_pooling="global"):
    """A model with ``model``'s weights (a MobileNetV2 object given as weights).  A transformers
    checkpoint keeps the graph its config.json describes (its padding, output stride, DeepLabV3
    head): Keras's graph with its weights would be another model."""
    from mobilenetv2.hf import HFMobileNetV2
    if isinstance(model, HFMobileNetV2):
        config = model.config
        if config.head == "classification" and not include_top:
            config = dataclasses.replace(config, head=None, id2label=None)
        m = HFMobileNetV2(config, dtype=dtype, top_pooling=top_pooling if config.head == "classification" else "global")
    else:
        classes = model.classes if model.include_top else 1000
        m = _model(model.alpha, hw, include_top and model.include_top, classes, dtype, pooling, top_pooling)
    for layer in m.weighted_layers():
        src = model.get_layer(layer.name)
        if isinstance(src, L.BatchNormalization):
            layer.epsilon = src.epsilon
        layer.set_weights(src.get_weights(), m.dtype)
    return m


_ACCEPTS = ("a Keras .h5 file, a Hugging Face checkpoint folder or a variant name such as 1.0_224 "
            "(mobilenetv2 info lists the 22)")


def _named(weights):
    """What a --weights value names, read as every subcommand reads it (model_options.read_weights);
    'imagenet' and 'none' name no weights compare can use (which alpha? which size?)."""
    if not isinstance(weights, (str, bytes, os.PathLike)):
        raise CompareError(f"weights must be a MobileNetV2 object, a path or a variant name, got {weights!r:.60}")
    named = read_weights(weights, _ACCEPTS)
    if named.kind in ("imagenet", "none"):
        raise CompareError(f"--weights {named.kind!r} does not say which weights the reference takes; "
                           f"compare's --weights takes {_ACCEPTS}")
    return named


def from_user(weights, hw, include_top, pooling=None, top_pooling="global"):
    """(float64 model, float32 model, description, cannot-detect note) from --weights: a
    MobileNetV2 object, a Keras .h5, a Hugging Face folder, or a variant name like '1.0_224'."""
    from mobilenetv2 import MobileNetV2
    named = None if isinstance(weights, MobileNetV2) else _named(weights)
    if named is None:
        src, desc = weights, f"the given model object ({weights.describe()})"
        # the model given says which head is meant: its pooling, not OTHER's, is the reference's
        top_pooling = weights.top_pooling if weights.include_top else top_pooling
        pooling = weights.pooling or pooling
    elif named.kind == "hf":
        from mobilenetv2.hf import from_pretrained
        src, desc = from_pretrained(named.path, dtype="float64"), f"Hugging Face checkpoint {named.path!r}"
    elif named.kind == "keras":
        from mobilenetv2.formats.loader import classifier_classes
        path = named.path
        os.close(files.open_regular(path, "weights file"))  # a FIFO or device: said as such, not as no alpha
        # a fine-tuned head has the classes it was trained on; a file no reader opens (truncated,
        # not HDF5, no layers) fails here with the loader's own reason, which every load below would
        # give too and the search over alphas would hide
        classes = classifier_classes(path) or 1000
        src = None
        for top in ((True, False) if include_top else (False, True)):  # a head OTHER lacks is dropped
            for alpha in OFFICIAL_ALPHAS:
                try:
                    src = MobileNetV2((hw[0], hw[1], 3), alpha=alpha, include_top=top, weights=path,
                                      classes=classes if top else 1000, classifier_activation=None,
                                      dtype="float64")
                    break
                except ValueError:
                    continue
            if src is not None:
                break
        if src is None:
            raise CompareError(f"--weights {path!r} loads into no MobileNetV2 of alpha {OFFICIAL_ALPHAS} "
                               "(is it a Keras MobileNetV2 .h5 weights file?)")
        desc = f"Keras weights file {path!r} (alpha={src.alpha:g}" + \
            (f", {src.classes} classes)" if src.include_top and src.classes != 1000 else ")")
    else:  # a variant name: the _no_top file where OTHER has no head, or the with-top file found
        from mobilenetv2.formats.registry import weights_filename
        top = include_top or _only_the_top_file_found(named.alpha, named.rows)
        src = MobileNetV2((named.rows, named.rows, 3), alpha=named.alpha, include_top=top,
                          weights="imagenet", classifier_activation=None, dtype="float64")
        desc = (f"imagenet weights of variant {variant_name(named.alpha, named.rows)} "
                f"(Keras's {weights_filename(named.alpha, named.rows, top)})")
    m64 = _copy(src, "float64", hw, include_top, pooling, top_pooling)
    m32 = _copy(src, "float32", hw, include_top, pooling, top_pooling)
    cannot = ("reference weights given by the user: every defect in OTHER, weights included, is "
              "visible; a wrong class head shows only if OTHER's head is compared")
    return m64, m32, desc, cannot


def _only_the_top_file_found(alpha, rows):
    """Whether the variant's official with-top file is in the search folders and its _no_top file
    is not: that file holds every weight a headless OTHER needs (its head is dropped), where the
    _no_top file would be downloaded, or refused with downloading off (`dump --weights V` then
    `compare acts.npz --weights V` needed a second file for the same weights)."""
    from mobilenetv2.formats.registry import find_weights, found_weights
    if find_weights(alpha, rows, False) is not None:
        return False
    path, problem = found_weights(alpha, rows, True)
    return path is not None and problem is None


def own_keras_model(other, hw):
    """A Keras model's own weights as a float64 MobileNetV2 (as ``from_keras_object`` reads them),
    or None where they cannot be read so (the layer-by-layer comparison shows those)."""
    try:
        return from_keras_object(other, hw)[0]
    except (CompareError, WeightsError):
        return None


def from_keras_object(other, hw):
    """The reference with a Keras model's own weights, by layer name (its epsilon stays Keras's)."""
    try:  # (Keras's get_layer raises ValueError for a name it does not have)
        cout = other.keras_weights("block_16_project")[0].shape[-1]
    except Exception as exc:
        raise CompareError(f"the Keras model has no MobileNetV2 layer block_16_project ({exc})") from None
    try:
        top = other.keras_weights("predictions")
    except ValueError:  # no classifier head
        top = None
    alpha = next((a for a in OFFICIAL_ALPHAS if arch.make_divisible(int(320 * a), 8) == cout), None)
    if alpha is None:
        raise CompareError(f"the Keras model's block_16_project has {cout} filters: no MobileNetV2 alpha "
                           f"in {OFFICIAL_ALPHAS} gives that")
    models = [_model(alpha, hw, top is not None, top[0].shape[1] if top else 1000, dtype)
              for dtype in ("float64", "float32")]
    for layers in zip(*(m.weighted_layers() for m in models)):  # each layer's weights read once
        try:
            weights = other.keras_weights(layers[0].name)
        except Exception as exc:
            raise CompareError(f"the Keras model has no layer {layers[0].name}, which MobileNetV2 of alpha "
                               f"{alpha:g} has ({exc})") from None
        for layer, m in zip(layers, models):
            layer.set_weights(weights, m.dtype)
    return (models[0], models[1], f"read from the Keras model by layer name (alpha={alpha:g})",
            "weights read from OTHER cannot show weights already rounded (float16/bfloat16) in them")
