"""transformers' ``MobileNetV2Config`` (config.json) and ``MobileNetV2ImageProcessor`` settings
(preprocessor_config.json), read as plain JSON and validated field by field.

Nothing in these files is evaluated.  Fields that do not change the computation (``dtype``,
``torch_dtype``, ``transformers_version``, ``classifier_dropout_prob``, ``initializer_range``,
``semantic_loss_ignore_index``, ``label2id`` and transformers' generic keys) are type-checked where
they matter and otherwise ignored; ``problem_type`` (which makes transformers' pipeline score with a
sigmoid instead of a softmax) is checked as transformers checks it and kept, for save_pretrained.
"""
import dataclasses
import json
import math
import os
import re
import unicodedata

import numpy as np

from mobilenetv2 import files
from mobilenetv2.network.arch import MAX_SIZE, MIN_SIZE
from mobilenetv2.errors import ArgumentError, Error, a_or_an, is_finite

MAX_JSON_BYTES = 16 * 1024 * 1024
ARCHITECTURES = {"MobileNetV2Model": None, "MobileNetV2ForImageClassification": "classification",
                 "MobileNetV2ForSemanticSegmentation": "segmentation"}
SUPPORTED_ACTS = ("relu6",)
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")  # as transformers allows
MAX_LABELS = 100_000  # as the model's classes (model.MAX_CLASSES)
_LABEL_ID = re.compile(r"0|[1-9][0-9]{0,5}")  # a decimal id as transformers writes it: ASCII, no leading 0


class ConfigError(Error, ValueError):
    """A config.json or preprocessor_config.json that is malformed or describes something else."""

    def __init__(self, path, problem):
        super().__init__(f"{files.path_str(path)!r}: {problem}")


def _refuse_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text):
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:40]} overflows a float")
    return v


def read_json(path, what):
    """The JSON object in ``path`` (a regular file of at most MAX_JSON_BYTES, with no NaN or
    Infinity literal and no number beyond a float), or ConfigError.  Nesting deeper than the
    interpreter's recursion limit is a RecursionError inside json's C scanner, refused here too."""
    path = os.fspath(path)
    try:
        fd = files.open_regular(path, what)
    except files.NotRegularFile as exc:
        raise ConfigError(path, exc.problem) from None  # (which names the file)
    with os.fdopen(fd, "rb") as f:
        data = files.read_bounded(f, MAX_JSON_BYTES)
    if data is None:
        raise ConfigError(path, f"{what} is larger than {MAX_JSON_BYTES} bytes")
    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(path, f"{what} is not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise ConfigError(path, f"{what} must be a JSON object, got {a_or_an(type(obj).__name__)}")
    return obj


_number = is_finite  # (JSON's numbers; a dict's may be NumPy's too)


def _integer(v):
    return isinstance(v, int) and not isinstance(v, bool)


@dataclasses.dataclass
class HFConfig:
    """The fields of a MobileNetV2Config that define the computation, validated."""

    depth_multiplier: float = 1.0
    depth_divisible_by: int = 8
    min_depth: int = 8
    expand_ratio: float = 6.0
    output_stride: int = 32
    first_layer_is_expansion: bool = True
    finegrained_output: bool = True
    hidden_act: str = "relu6"
    tf_padding: bool = True
    layer_norm_eps: float = 0.001
    num_channels: int = 3
    image_size: int = 224
    head: str = None           # None (MobileNetV2Model), 'classification' or 'segmentation'
    id2label: dict = None      # {int: str}
    classifier_dropout_prob: float = 0.8
    semantic_loss_ignore_index: int = 255
    initializer_range: float = 0.02
    problem_type: str = None   # transformers' pipeline scores with sigmoid for multi-label or regression

    @property
    def num_labels(self):
        return len(self.id2label) if self.id2label else 0

    @property
    def architecture(self):
        return {v: k for k, v in ARCHITECTURES.items()}[self.head]

    def to_json(self):
        """config.json as transformers writes it for this model."""
        out = {"architectures": [self.architecture]}
        for f in dataclasses.fields(self):
            if f.name not in ("head", "id2label") and not (f.name == "problem_type" and self.problem_type is None):
                out[f.name] = getattr(self, f.name)
        if self.head is not None:
            out["id2label"] = {str(k): v for k, v in sorted(self.id2label.items())}
            label2id = {v: k for k, v in sorted(self.id2label.items())}  # a repeated name: its last id
            out["label2id"] = dict(sorted(label2id.items()))
        out["dtype"] = "float32"
        out["model_type"] = "mobilenet_v2"
        return dict(sorted(out.items()))


_CHECKS = {  # field: (test, what it must be)
    "depth_multiplier": (lambda v: _number(v) and 0 < v <= 8, "a number in (0, 8]"),
    "depth_divisible_by": (lambda v: _integer(v) and 1 <= v <= 1024, "an integer in [1, 1024]"),
    "min_depth": (lambda v: _integer(v) and 1 <= v <= 4096, "an integer in [1, 4096]"),
    "expand_ratio": (lambda v: _number(v) and 0 < v <= 64, "a number in (0, 64]"),
    "output_stride": (lambda v: v in (8, 16, 32) and _integer(v), "8, 16 or 32"),
    "first_layer_is_expansion": (lambda v: isinstance(v, bool), "true or false"),
    "finegrained_output": (lambda v: isinstance(v, bool), "true or false"),
    "hidden_act": (lambda v: v in SUPPORTED_ACTS, f"one of {SUPPORTED_ACTS}"),
    "tf_padding": (lambda v: isinstance(v, bool), "true or false"),
    "layer_norm_eps": (lambda v: _number(v) and 0 < v < 1, "a number in (0, 1)"),
    "num_channels": (lambda v: _integer(v) and 1 <= v <= 64, "an integer in [1, 64]"),
    "image_size": (lambda v: _integer(v) and MIN_SIZE <= v <= MAX_SIZE, f"an integer in [{MIN_SIZE}, {MAX_SIZE}]"),
    "classifier_dropout_prob": (lambda v: _number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "semantic_loss_ignore_index": (lambda v: _integer(v), "an integer"),
    "initializer_range": (lambda v: _number(v) and v >= 0, "a non-negative number"),
    "problem_type": (lambda v: v is None or v in PROBLEM_TYPES, f"null or one of {PROBLEM_TYPES}"),
}


def parse_config(obj, path="config.json", head=...):
    """An HFConfig from a config.json object.  ``head`` (None, 'classification', 'segmentation')
    overrides the one the ``architectures`` field names."""
    fields = {}
    for name, (test, want) in _CHECKS.items():
        if name in obj:
            if not test(obj[name]):
                raise ConfigError(path, f"{name} must be {want}, got {str(obj[name])[:60]!r}")
            fields[name] = obj[name]
    if fields.get("layer_norm_eps", 1) < np.finfo(np.float32).tiny:  # float32 would lose it (1e-300 is 0)
        raise ConfigError(path, f"layer_norm_eps {fields['layer_norm_eps']!r} is below float32's smallest normal "
                                f"number ({np.finfo(np.float32).tiny:.4g}): the float32 model would divide a "
                                "channel of variance 0 by 0")
    if "model_type" in obj and obj["model_type"] != "mobilenet_v2":
        raise ConfigError(path, f"model_type is {str(obj['model_type'])[:40]!r}, not 'mobilenet_v2' "
                                "(this package runs MobileNetV2 checkpoints only)")
    archs = obj.get("architectures")
    if archs is not None and not (isinstance(archs, list) and len(archs) == 1
                                 and isinstance(archs[0], str) and archs[0] in ARCHITECTURES):
        raise ConfigError(path, f"architectures must be one of {sorted(ARCHITECTURES)} in a list, "
                                f"got {str(archs)[:80]}")
    if head is ...:
        head = ARCHITECTURES[archs[0]] if archs else None
    if head not in (None, "classification", "segmentation"):
        raise ArgumentError(f"head must be None, 'classification' or 'segmentation', got {head!r}")
    labels = obj.get("id2label")
    id2label = None
    if labels is not None:
        if not isinstance(labels, dict) or len(labels) > MAX_LABELS or not all(
                isinstance(k, str) and _LABEL_ID.fullmatch(k) and isinstance(v, str) for k, v in labels.items()):
            raise ConfigError(path, f"id2label must map at most {MAX_LABELS} decimal ids (strings of "
                                    "ASCII digits, no leading zero) to label strings")
        id2label = {int(k): v for k, v in labels.items()}
        for i, label in id2label.items():
            bad = next((ch for ch in label if unicodedata.category(ch) in ("Cc", "Cs")), None)
            if bad is not None:  # printed as they are by classify and segment
                raise ConfigError(path, f"id2label's label for id {i} holds U+{ord(bad):04X}, a control character "
                                        "or a lone surrogate: a label must be printable text")
        if sorted(id2label) != list(range(len(id2label))):
            raise ConfigError(path, f"id2label's ids must be 0..{len(id2label) - 1}, each once")
    n = obj.get("num_labels")
    if n is not None and (not _integer(n) or not 1 <= n <= MAX_LABELS or (id2label and n != len(id2label))):
        raise ConfigError(path, f"num_labels must be an integer from 1 to {MAX_LABELS} equal to id2label's "
                                f"size, got {str(n)[:40]}")
    if head is not None and id2label is None:
        id2label = {i: f"LABEL_{i}" for i in range(n or 2)}  # transformers' default names
    if head is not None and not id2label:
        raise ConfigError(path, f"a head needs 1 to {MAX_LABELS} labels, id2label is empty")
    return HFConfig(head=head, id2label=id2label if head is not None else None, **fields)


def read_config(path, head=...):
    return parse_config(read_json(path, "config.json"), os.fspath(path), head)


@dataclasses.dataclass
class ProcessorConfig:
    """MobileNetV2ImageProcessor's settings."""

    do_resize: bool = True
    shortest_edge: int = 256
    resize_height: int = None  # size {"height": H, "width": W}: resized to exactly H x W (shortest_edge unused)
    resize_width: int = None
    resample: int = 2
    do_center_crop: bool = True
    crop_height: int = 224
    crop_width: int = 224
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple = (0.5, 0.5, 0.5)
    image_std: tuple = (0.5, 0.5, 0.5)

    @classmethod
    def for_image_size(cls, image_size):
        """The hub conversion script's rule: crop image_size, shortest edge image_size + 32 (at most
        MAX_SIZE, the bound a preprocessor_config.json's is held to: 4080's 4112 was refused)."""
        return cls(shortest_edge=min(image_size + 32, MAX_SIZE), crop_height=image_size, crop_width=image_size)

    def to_json(self):
        return {"crop_size": {"height": self.crop_height, "width": self.crop_width},
                "do_center_crop": self.do_center_crop, "do_normalize": self.do_normalize,
                "do_reduce_labels": False, "do_rescale": self.do_rescale, "do_resize": self.do_resize,
                "image_mean": list(self.image_mean), "image_processor_type": "MobileNetV2ImageProcessor",
                "image_std": list(self.image_std), "resample": self.resample,
                "rescale_factor": self.rescale_factor,
                "size": ({"shortest_edge": self.shortest_edge} if self.resize_height is None
                         else {"height": self.resize_height, "width": self.resize_width})}


RESAMPLE_BILINEAR = 2


def parse_processor_config(obj, path="preprocessor_config.json", min_crop=MIN_SIZE):
    """A ProcessorConfig from a preprocessor_config.json object (or a dict of the same keys).  A
    file's crop is at least ``min_crop`` (MIN_SIZE, the smallest input a model takes); a
    ProcessorConfig made by hand is checked with 1 (hf_preprocess alone takes a 4x4 crop, as
    transformers does)."""
    def fail(problem):
        raise ConfigError(path, problem)

    out = {}
    for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        if key in obj:
            if not isinstance(obj[key], bool):
                fail(f"{key} must be true or false")
            out[key] = obj[key]
    size = obj.get("size", {"shortest_edge": 256})
    if _integer(size):
        size = {"shortest_edge": size}
    # transformers' MobileNetV2ImageProcessor takes either: the short side to N, the long side in
    # proportion; or exactly H x W
    if not (isinstance(size, dict) and set(size) in ({"shortest_edge"}, {"height", "width"})
            and all(_integer(v) and 1 <= v <= MAX_SIZE for v in size.values())):
        fail(f"size must be {{'shortest_edge': N}} or {{'height': H, 'width': W}}, each from 1 to {MAX_SIZE} "
             f"(the largest side a model takes), got {str(size)[:80]}")
    if "shortest_edge" in size:
        out["shortest_edge"] = size["shortest_edge"]
    else:
        out["resize_height"], out["resize_width"] = size["height"], size["width"]
    crop = obj.get("crop_size", {"height": 224, "width": 224})
    if _integer(crop):
        crop = {"height": crop, "width": crop}
    if not (isinstance(crop, dict) and set(crop) == {"height", "width"} and
            all(_integer(v) and min_crop <= v <= MAX_SIZE for v in crop.values())):
        why = " (the sizes a model takes)" if min_crop == MIN_SIZE else ""
        fail(f"crop_size must be {{'height': H, 'width': W}}, each from {min_crop} to {MAX_SIZE}{why}, "
             f"got {str(crop)[:80]}")
    out["crop_height"], out["crop_width"] = crop["height"], crop["width"]
    if "resample" in obj and obj["resample"] != RESAMPLE_BILINEAR:
        fail(f"resample {obj['resample']!r} is not supported (only 2, bilinear, as the MobileNetV2 "
             "checkpoints use)")
    if "rescale_factor" in obj:
        if not (_number(obj["rescale_factor"]) and obj["rescale_factor"] > 0):
            fail("rescale_factor must be a positive number")
        out["rescale_factor"] = float(obj["rescale_factor"])
    for key in ("image_mean", "image_std"):
        if key in obj:
            v = obj[key]
            if _number(v):
                v = [v] * 3
            if not (isinstance(v, list) and len(v) == 3 and all(_number(x) for x in v)) or \
                    (key == "image_std" and not all(x > 0 for x in v)):
                fail(f"{key} must be three numbers (std positive), got {str(obj[key])[:60]}")
            out[key] = tuple(map(float, v))
    cfg = ProcessorConfig(**out)
    top = 255 * (cfg.rescale_factor if cfg.do_rescale else 1.0)
    mean, std = (np.asarray(cfg.image_mean), np.asarray(cfg.image_std)) if cfg.do_normalize else (0.0, 1.0)
    with np.errstate(all="ignore"):
        worst = np.max(np.maximum(abs(top - mean), abs(mean)) / std)
    if not worst <= np.finfo(np.float32).max / 1e6:
        fail(f"rescale_factor, image_mean and image_std turn pixels into values up to {worst:.3g}, beyond "
             "what float32 holds through the network: a pixel must map to a finite number")
    return cfg


def read_processor_config(path):
    return parse_processor_config(read_json(path, "preprocessor_config.json"), os.fspath(path))
