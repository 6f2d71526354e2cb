"""transformers' MobileNetV2 checkpoints on this package's engines.

``from_pretrained(folder)`` reads a Hugging Face folder (config.json, model.safetensors and,
optionally, preprocessor_config.json) with NumPy alone and returns an ``HFMobileNetV2``: the same
model class, layer graph (built by ``arch.build_hf_layers``), C plan and NumPy engine as Keras's
MobileNetV2, with Keras's layer names inside and transformers' module names accepted wherever a
layer name is taken.  ``save_pretrained(model, folder)`` writes such a folder (also from a Keras
model: that converts a Keras .h5 file for transformers).

Arrays are NHWC (batch, height, width, channels), as everywhere in this package; transformers'
are NCHW: ``x_nchw.transpose(0, 2, 3, 1)`` gives ours.

The name table (HF module -> Keras layers; each HF conv module's ``convolution.weight`` is the
Keras conv's kernel, its ``normalization.{weight, bias, running_mean, running_var}`` the batch
norm's gamma, beta, moving mean and variance; ``num_batches_tracked`` is ignored):

    conv_stem.first_conv            Conv1, bn_Conv1                (output: Conv1_relu)
    conv_stem.expand_1x1            expanded_conv_expand, _BN      (first_layer_is_expansion=false)
    conv_stem.conv_3x3              expanded_conv_depthwise, _BN   (expanded_conv_depthwise_relu)
    conv_stem.reduce_1x1            expanded_conv_project, _BN     (expanded_conv_project_BN)
    layer.{i}.expand_1x1            block_{i+1}_expand, _BN        (block_{i+1}_expand_relu)
    layer.{i}.conv_3x3              block_{i+1}_depthwise, _BN     (block_{i+1}_depthwise_relu)
    layer.{i}.reduce_1x1            block_{i+1}_project, _BN       (block_{i+1}_project_BN)
    layer.{i}                       the block's output             (block_{i+1}_add or _project_BN)
    conv_1x1                        Conv_1, Conv_1_bn              (out_relu)
    pooler                          global_average_pooling2d
    classifier                      predictions (Linear (out, in) = Dense kernel transposed)
    segmentation_head.conv_pool     aspp_pool_conv, _BN            (aspp_pool_conv_relu)
    segmentation_head.conv_aspp     aspp_conv, _BN                 (aspp_conv_relu)
    segmentation_head.conv_projection  aspp_projection, _BN        (aspp_projection_relu)
    segmentation_head.classifier    logits (1x1 conv with bias)

(with the prefix ``mobilenet_v2.`` on the backbone's names in the classification and segmentation
checkpoints).  Torch layouts: conv (out, in, kh, kw) = Keras (kh, kw, in, out) transposed
(3, 2, 0, 1); depthwise (C, 1, kh, kw) = Keras (kh, kw, C, 1) transposed (2, 3, 0, 1).
"""
import errno
import json
import os

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network import arch
from mobilenetv2.network import layers as L
from mobilenetv2.errors import ArgumentError, Error, OutputPathError, check_option
from mobilenetv2.formats.hf_config import (ARCHITECTURES, ConfigError, HFConfig, ProcessorConfig, parse_config,
                                           read_json, read_processor_config)
from mobilenetv2.model import MobileNetV2, _check_dtype, _check_layer_names, check_top_pooling
from mobilenetv2.formats.safetensors import SafetensorsError, SafetensorsFile, pickle_hint, save_file

PREFIX = "mobilenet_v2."
_BN = ("weight", "bias", "running_mean", "running_var")


class CheckpointError(Error, ValueError):
    """A Hugging Face folder whose tensors do not fit the model its config describes."""


def _module_table(model):
    """[(HF module name without prefix, conv layer, batch-norm layer or None, output layer)] of a
    model's layer list (a model, or a list of layers), in order."""
    byname = {layer.name: layer for layer in getattr(model, "layers", model)}
    rows = []

    def conv(hf, keras, bn, out):
        if keras in byname:
            rows.append((hf, byname[keras], byname.get(bn) if bn else None, out))

    conv("conv_stem.first_conv", "Conv1", "bn_Conv1", "Conv1_relu")
    conv("conv_stem.expand_1x1", "expanded_conv_expand", "expanded_conv_expand_BN", "expanded_conv_expand_relu")
    conv("conv_stem.conv_3x3", "expanded_conv_depthwise", "expanded_conv_depthwise_BN",
         "expanded_conv_depthwise_relu")
    conv("conv_stem.reduce_1x1", "expanded_conv_project", "expanded_conv_project_BN", "expanded_conv_project_BN")
    for i in range(16):
        p = f"block_{i + 1}_"
        conv(f"layer.{i}.expand_1x1", p + "expand", p + "expand_BN", p + "expand_relu")
        conv(f"layer.{i}.conv_3x3", p + "depthwise", p + "depthwise_BN", p + "depthwise_relu")
        conv(f"layer.{i}.reduce_1x1", p + "project", p + "project_BN", p + "project_BN")
    conv("conv_1x1", "Conv_1", "Conv_1_bn", "out_relu")
    conv("classifier", "predictions", None, "predictions")
    for hf, keras in (("conv_pool", "aspp_pool_conv"), ("conv_aspp", "aspp_conv"),
                      ("conv_projection", "aspp_projection")):
        conv("segmentation_head." + hf, keras, keras + "_BN", keras + "_relu")
    conv("segmentation_head.classifier", "logits", None, "logits")
    return rows


def _block_outputs(layers):
    """The 16 Keras layers whose outputs are transformers' hidden states (layer.0 .. layer.15)."""
    names = {layer.name for layer in layers}
    return [f"block_{i}_add" if f"block_{i}_add" in names else f"block_{i}_project_BN" for i in range(1, 17)]


def hf_name_map(model):
    """{transformers module name: Keras layer name whose output it is}, with and without the
    ``mobilenet_v2.`` prefix of the backbone."""
    out = {}
    for hf, _, _, keras in _module_table(model):
        out[hf] = keras
    for i, keras in enumerate(_block_outputs(model.layers)):
        out[f"layer.{i}"] = keras
    out["conv_stem"] = "expanded_conv_project_BN"
    if "global_average_pooling2d" in model._by_name:
        out["pooler"] = "global_average_pooling2d"
    for hf in [k for k in out if not k.startswith(("classifier", "segmentation_head"))]:
        out[PREFIX + hf] = out[hf]
    return out


def _build_layers(config, top_pooling="global"):
    return arch.build_hf_layers(
        config.depth_multiplier, config.depth_divisible_by, config.min_depth, config.expand_ratio,
        config.output_stride, config.first_layer_is_expansion, config.finegrained_output,
        config.tf_padding, config.layer_norm_eps, config.num_channels, config.head,
        config.num_labels, top_pooling)


class HFMobileNetV2(MobileNetV2):
    """A transformers MobileNetV2 (``MobileNetV2Model``, ``...ForImageClassification`` or
    ``...ForSemanticSegmentation``) on this package's engines.  Build it with ``from_pretrained``.

    Inputs and outputs are NHWC: ``predict(x)`` takes (N, H, W, C) float arrays (any H, W >= 32)
    and returns the logits (N, num_labels) for classification, (N, ceil(H/8), ceil(W/8),
    num_labels) for segmentation (output stride 8), or the pooled features (N, 1280) for the bare
    backbone.  float32 runs on the C core where the graph allows, float64 on the NumPy engine.
    Layer names: Keras's (``model.layers``) or transformers' module names (``hf_name_map``).
    """

    def __init__(self, config, dtype="float32", threads=None, top_pooling="global", engine="auto"):
        if not isinstance(config, HFConfig):
            raise TypeError("config must be an HFConfig (use from_pretrained to read a folder)")
        check_top_pooling(top_pooling)
        if top_pooling == "7x7" and config.head != "classification":
            raise ArgumentError(f"top_pooling='7x7' is TF-slim's classification head; this checkpoint has "
                                f"{'no head' if config.head is None else 'a ' + config.head + ' head'} "
                                "(leave top_pooling as 'global')")
        self.config = config
        self.alpha = float(config.depth_multiplier)
        self.threads = threads
        self.dtype = _check_dtype(dtype)
        self.input_shape = (None, None, config.num_channels)
        self.weights_rows = config.image_size
        self.include_top = config.head is not None
        self.pooling = None
        self.classes = config.num_labels
        self.classifier_activation = None
        self.top_pooling = top_pooling
        self.id2label = dict(config.id2label) if config.id2label else {}
        self.processor_config = ProcessorConfig.for_image_size(config.image_size)
        self._adopt_layers(_build_layers(config, top_pooling), engine)
        self.hf_names = hf_name_map(self)

    @property
    def name(self):
        kind = {None: "mobilenet_v2", "classification": "mobilenet_v2",
                "segmentation": "deeplabv3_mobilenet_v2"}[self.config.head]
        return f"{kind}_{self.alpha:g}_{self.config.image_size}"

    def describe(self):
        return f"transformers {self.config.architecture} depth_multiplier={self.alpha:g}" + (
            f" ({self.classes} labels)" if self.classes else "")

    def _static_shape(self, input_shape=None):
        """The checkpoint's image_size where no input shape is given (summary, macs)."""
        size = self.config.image_size
        return tuple(input_shape) if input_shape else (size, size, self.config.num_channels)

    def load_weights(self, weights):
        """Load a model.safetensors (transformers' names and layouts) into this model."""
        load_safetensors(self, weights)

    def keras_name(self, name):
        """The Keras layer name for a Keras or transformers name."""
        if isinstance(name, str) and name in self._by_name:
            return name
        if isinstance(name, str) and name in self.hf_names:
            return self.hf_names[name]
        raise ArgumentError(f"no layer or transformers module named {name!r} in this model "
                            "(see model.layers and model.hf_names)")

    def get_layer(self, name=None, index=None):
        """The layer by its Keras or transformers name, or at ``index`` (as MobileNetV2.get_layer)."""
        return super().get_layer(self.keras_name(name) if isinstance(name, str) else name, index)

    def features(self, x, layers):
        """The named layers' outputs (NHWC) as a dict keyed by the names asked (Keras layer names
        or transformers module names), computing nothing after the last one needed."""
        layers = _check_layer_names(layers)
        out = super().features(x, [self.keras_name(n) for n in layers])
        return {n: out[self.keras_name(n)] for n in layers}

    def trace(self, x, names="keras"):
        """Every layer's output after the input, in order: by Keras name (``names='keras'``), or
        for each transformers module that has an output of its own (``names='hf'``)."""
        check_option(names, ("keras", "hf"), "names must be 'keras' or 'hf'")
        out = super().trace(x)
        if names == "keras":
            return out
        return {hf: out[k] for hf, k in self.hf_names.items() if not hf.startswith(PREFIX)}

    def hidden_states(self, x):
        """transformers' ``output_hidden_states``: the outputs of the 16 blocks ``layer.0`` ..
        ``layer.15`` (not the stem's, not conv_1x1's), a list of NHWC arrays."""
        names = _block_outputs(self.layers)
        wanted = set(names)  # (refused for memory before the input is copied or read, as features())
        out = self._run(self._fitted_input(x, wanted), wanted, checked=True)
        return [out[n] for n in names]


def _expected(model):
    """{tensor name: (torch shape, layer, index in layer.weights, 'conv'|'depthwise'|'linear'|'vector')}
    for every tensor the model reads, with the checkpoint's prefix rules applied later."""
    out = {}
    for hf, conv, bn, _ in _module_table(model):
        if isinstance(conv, L.Dense):
            out[hf + ".weight"] = ((conv.cout, conv.cin), conv, 0, "linear")
            out[hf + ".bias"] = ((conv.cout,), conv, 1, "vector")
            continue
        if isinstance(conv, L.DepthwiseConv2D):
            out[hf + ".convolution.weight"] = ((conv.channels, 1, 3, 3), conv, 0, "depthwise")
        else:
            out[hf + ".convolution.weight"] = ((conv.cout, conv.cin, conv.kernel, conv.kernel), conv, 0, "conv")
            if conv.use_bias:
                out[hf + ".convolution.bias"] = ((conv.cout,), conv, 1, "vector")
        if bn is not None:
            for i, w in enumerate(_BN):
                out[f"{hf}.normalization.{w}"] = ((bn.channels,), bn, i, "vector")
    return out


def _hf_key(name, prefixed):
    return PREFIX + name if prefixed and not name.startswith(("classifier", "segmentation_head")) else name


_TO_KERAS = {"conv": (2, 3, 1, 0), "depthwise": (2, 3, 0, 1), "linear": (1, 0)}  # torch layout -> Keras's


def _to_keras(a, kind):
    return a.transpose(_TO_KERAS[kind]) if kind in _TO_KERAS else a


def _to_torch(a, kind):
    return a.transpose(np.argsort(_TO_KERAS[kind])) if kind in _TO_KERAS else a


def check_tensors(f, layers, config):
    """{tensor name: (torch shape, layer, index, layout)} of a model of ``layers`` (described by
    ``config``) in the SafetensorsFile ``f``, after checking from the header alone that every
    expected tensor is there with its exact shape and a float dtype, and nothing else is (other
    than BN ``num_batches_tracked`` and, for segmentation, the conv_1x1 the head never reads)."""
    path = f.path
    names = set(f.names())
    prefixed = any(n.startswith(PREFIX) for n in names)
    expected = {_hf_key(k, prefixed): v for k, v in _expected(layers).items()}
    ignorable = {n for n in names if n.endswith(".num_batches_tracked")}
    if config.head == "segmentation":
        ignorable |= {n for n in names if n.startswith(_hf_key("conv_1x1.", prefixed))}
    missing = sorted(set(expected) - names)
    extra = sorted(names - set(expected) - ignorable)
    what = f"the transformers {config.architecture} of depth_multiplier {config.depth_multiplier:g} in its config.json"
    if missing:
        raise CheckpointError(f"{path!r} lacks {len(missing)} tensor(s) that {what} needs: "
                              f"{', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''} "
                              "(a checkpoint of another model, or a config.json that does not belong to it?)")
    if extra:
        raise CheckpointError(f"{path!r} has {len(extra)} tensor(s) that {what} does not have: "
                              f"{', '.join(extra[:4])}{', ...' if len(extra) > 4 else ''} "
                              "(a checkpoint of another model, or a config.json that does not belong to it?)")
    for name, (shape, layer, _, _) in expected.items():
        if f.shape(name) != shape:
            raise CheckpointError(f"{path!r}: tensor {name!r} has shape {f.shape(name)}, {what} needs "
                                  f"{shape} (for layer {layer.name!r}; check depth_multiplier and the labels)")
        if f.dtype(name) not in ("F32", "F64", "F16", "BF16"):
            raise CheckpointError(f"{path!r}: tensor {name!r} has dtype {f.dtype(name)}, expected floats")
    return expected


def _check_values(path, name, a, dtype):
    """set_weights' refusals of a tensor's values (NaN or inf, a negative variance, a value the
    model's dtype cannot hold), by the name the file gives the tensor: set_weights names the Keras
    layer ('Conv_1' weight 'kernel'), which a checkpoint's reader has never seen."""
    where = f"{path!r}: tensor {name!r}"
    if not np.isfinite(a).all():
        raise CheckpointError(f"{where} holds NaN or inf: the checkpoint is damaged, or was saved from a "
                              "training run that diverged (use an intact copy)")
    if name.endswith(".running_var") and (a < 0).any():
        raise CheckpointError(f"{where} (a batch norm's variance) has negative values (as low as {a.min():g}): "
                              "a variance is never negative, so the checkpoint is damaged (use an intact copy)")
    with np.errstate(over="ignore"):
        overflows = a.dtype.itemsize > np.dtype(dtype).itemsize and np.isinf(a.astype(dtype)).any()
    if overflows:
        raise CheckpointError(f"{where} has values beyond the range of {np.dtype(dtype).name}, the model's dtype "
                              f"(as large as {np.abs(a).max():g}): load it with dtype='float64'")


def load_safetensors(model, path):
    """Read a transformers model.safetensors into ``model``'s layers (see check_tensors: shapes
    and names are checked from the header before any tensor is read).  Every layer's tensors are
    checked before any is taken, and all are swapped at once (model.set_weights' rule): a bad
    tensor leaves the model as it was, and a call running meanwhile sees the old weights or the new."""
    path = files.path_str(path)
    f = SafetensorsFile(path)
    expected = check_tensors(f, model.layers, model.config)
    by_layer = {}
    for name, (_, layer, index, kind) in expected.items():
        a = f.get(name)
        _check_values(path, name, a, model.dtype)
        by_layer.setdefault(layer.name, {})[index] = _to_keras(a, kind)
    try:
        model.set_weights([by_layer[layer.name][i] for layer in model.weighted_layers()
                           for i in range(len(layer.weight_shapes()))])
    except ValueError as exc:
        raise CheckpointError(f"{path!r}: {exc}") from None


def _member(folder, name):
    """``folder/name``, refused when it is a symbolic link resolving outside the folder (a
    checkpoint from a stranger must not make us read another file of this machine); the hub
    cache's snapshot links into its own ``blobs/`` are allowed (files.outside_folder)."""
    try:
        return files.folder_member(folder, name)
    except files.OutsideFolder as exc:
        raise CheckpointError(str(exc)) from None


def _architecture_named(config_path):
    """The transformers class a config.json's ``architectures`` names, or None where it names
    none this package knows (or cannot be read)."""
    try:
        archs = read_json(config_path, "config.json").get("architectures")
    except (Error, OSError):
        return None
    ok = isinstance(archs, list) and len(archs) == 1 and isinstance(archs[0], str) and archs[0] in ARCHITECTURES
    return archs[0] if ok else None


def _head_of(names):
    """The head a state dict's tensor names hold: 'classification', 'segmentation' or None."""
    if any(n.startswith("segmentation_head.") for n in names):
        return "segmentation"
    return "classification" if any(n.startswith("classifier.") for n in names) else None


def from_pretrained(path, dtype="float32", threads=None, top_pooling="global", engine="auto"):
    """An HFMobileNetV2 from a Hugging Face folder: config.json + model.safetensors (+
    preprocessor_config.json, kept as ``model.processor_config``).

    ``dtype='float32'`` runs on the C core (where the graph allows), ``'float64'`` on the NumPy
    engine as a golden reference for transformers itself (``engine`` as for MobileNetV2).
    ``top_pooling="7x7"`` gives a
    classification model TF-slim's 7x7 average-pooling head (a grid of scores above 224).
    A ``pytorch_model.bin`` (a pickle) is refused: convert it with transformers'
    ``<the class config.json's architectures names>.from_pretrained(folder).save_pretrained(folder,
    safe_serialization=True)`` (AutoModel would drop the head).  A config.json without
    ``architectures`` gets the head its tensors hold.  Arrays are NHWC.
    """
    check_top_pooling(top_pooling)
    folder = files.path_str(path)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(errno.ENOTDIR, "a Hugging Face checkpoint is a folder (config.json, "
                                     "model.safetensors), not a file: give the folder that holds them", folder)
        raise FileNotFoundError(errno.ENOENT, "Hugging Face checkpoint folder not found (from_pretrained reads a "
                                "local folder and downloads nothing: get a hub checkpoint with huggingface_hub."
                                "snapshot_download('<name>'), which returns its path, or git clone it)", folder)
    config_path = _member(folder, "config.json")
    weights = _member(folder, "model.safetensors")
    if not os.path.exists(weights):
        if os.path.lexists(os.path.join(folder, "pytorch_model.bin")):
            raise SafetensorsError(os.path.join(folder, "pytorch_model.bin"), "there is no model.safetensors "
                                   "beside it, and " + pickle_hint(_architecture_named(config_path)))
        raise FileNotFoundError(2, "no model.safetensors in the checkpoint folder", folder)
    obj = read_json(config_path, "config.json")
    config = parse_config(obj, config_path)
    tensors = SafetensorsFile(weights)
    if obj.get("architectures") is None:
        # transformers' Auto classes go by model_type: a config.json without architectures (as
        # MobileNetV2Config(...).save_pretrained writes it) has the head its tensors hold
        config = parse_config(obj, config_path, _head_of(tensors.names()))
    # the header against the graph the config describes, before any weight is allocated
    check_tensors(tensors, _build_layers(config, top_pooling), config)
    model = HFMobileNetV2(config, dtype=dtype, threads=threads, top_pooling=top_pooling, engine=engine)
    model.load_weights(weights)
    proc = _member(folder, "preprocessor_config.json")
    if os.path.lexists(proc):
        model.processor_config = read_processor_config(proc)
    return model


def expect_head(model, head, folder):
    """``model`` (from ``folder``) where its checkpoint has ``head`` ('classification' or
    'segmentation'), else an ArgumentError naming the folder and what it holds."""
    if model.config.head != head:
        want = {"classification": "an image classifier", "segmentation": "a segmentation model"}[head]
        raise ArgumentError(f"{files.path_str(folder)!r} holds a {model.config.architecture}, not {want}")
    return model


def _config_of(model):
    """The HFConfig describing a model of this package (an HFMobileNetV2, or Keras's MobileNetV2)."""
    if isinstance(model, HFMobileNetV2):
        return model.config
    if not isinstance(model, MobileNetV2):
        raise TypeError(f"save_pretrained takes a MobileNetV2 model, got {type(model).__name__}")
    if getattr(model, "pooling", None) == "max":
        raise ArgumentError("a model with pooling='max' has no transformers equivalent")
    widths = [c for _, _, c, _ in arch.block_specs(model.alpha)]
    hf_widths = [c for _, _, c, _, _ in arch.hf_block_specs(model.alpha)]
    if widths != hf_widths or arch.last_filters(model.alpha) != arch.hf_last_filters(model.alpha):
        raise ArgumentError(f"alpha={model.alpha:g} rounds its widths differently in transformers; "
                            "it has no exact transformers equivalent")
    if "expanded_conv_add" in model._by_name:  # (transformers' stem never adds: arch.build_hf_layers)
        raise ArgumentError(f"alpha={model.alpha:g}: Keras's first block adds its input to its output (both "
                            f"{widths[0]} channels), which transformers' stem never does; it has no exact "
                            "transformers equivalent")
    id2label = None
    if model.include_top:
        from mobilenetv2.processing.imagenet import class_table
        names = [name for _, name in class_table()] if model.classes == 1000 else \
            [f"LABEL_{i}" for i in range(model.classes)]
        id2label = dict(enumerate(names))
    return HFConfig(depth_multiplier=float(model.alpha), image_size=int(model.weights_rows),
                    num_channels=int(model.get_layer("Conv1").cin),  # 1 (grayscale) or 4 as well as RGB
                    head="classification" if model.include_top else None, id2label=id2label)


def _state_dict(model, config):
    """{transformers tensor name: float32 array in torch layout} for ``model``."""
    prefixed = config.head is not None
    out = {}
    for name, (_, layer, index, kind) in _expected(model).items():
        out[_hf_key(name, prefixed)] = np.ascontiguousarray(_to_torch(layer.weights[index], kind), np.float32)
        if name.endswith(".normalization.running_var"):
            out[_hf_key(name[:-len("running_var")] + "num_batches_tracked", prefixed)] = np.array(0, np.int64)
    return out


def _write_json(path, obj):
    with files.atomic_write(path, suffix=".json") as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_pretrained(model, path):
    """Write ``model`` as a folder transformers loads (config.json, model.safetensors in float32
    torch layouts with transformers' names, preprocessor_config.json).  A Keras MobileNetV2 becomes
    a ``MobileNetV2Model`` (no top) or ``MobileNetV2ForImageClassification`` (its own 1000 classes,
    Keras's order).  Returns the folder."""
    folder = files.output_str(path, "save_pretrained's folder")
    if not folder.strip():
        raise OutputPathError("save_pretrained's folder path is empty: give the folder to write")
    folder = os.path.abspath(folder)
    config = _config_of(model)
    if "average_pooling2d" in model._by_name:
        raise ArgumentError("a model with TF-slim's 7x7 head has no transformers equivalent")
    os.makedirs(folder, exist_ok=True)
    save_file(_state_dict(model, config), os.path.join(folder, "model.safetensors"), {"format": "pt"})
    _write_json(os.path.join(folder, "config.json"), config.to_json())
    proc = getattr(model, "processor_config", None) or ProcessorConfig.for_image_size(config.image_size)
    _write_json(os.path.join(folder, "preprocessor_config.json"), proc.to_json())
    return folder


__all__ = ["CheckpointError", "ConfigError", "HFMobileNetV2", "expect_head", "from_pretrained", "hf_name_map",
           "save_pretrained"]
