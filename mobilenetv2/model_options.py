"""What ``--weights`` names, read one way by every subcommand (``compare`` included), and the
model options the Keras-weights subcommands share: ``--alpha``, ``--size``, ``--weights``, ``--dtype``.

A ``--weights`` value is, in this order: 'imagenet' or 'none'; an existing folder (a Hugging Face
checkpoint); an existing file (a Keras .h5: the loader checks what it is); a variant name such as
'1.0_224', the imagenet weights of alpha 1.0 at 224 rows (``mobilenetv2 info`` lists the 22).
"""
import argparse
import os
import re
from typing import NamedTuple, Optional

from mobilenetv2 import files
from mobilenetv2.errors import ArgumentError, positive_int
from mobilenetv2.network.variants import parse_variant

KERAS_WEIGHTS = ("'imagenet', 'none', a variant name such as 1.0_224 (mobilenetv2 info lists the 22) "
                 "or a Keras .h5 file")
MODEL_DEFAULTS = {"alpha": 1.0, "size": 224, "weights": "imagenet"}
_VARIANT = re.compile(r"[0-9]+(\.[0-9]*)?_[0-9]+")  # what a variant name looks like, known or not


class Weights(NamedTuple):
    kind: str                      # 'imagenet', 'none', 'variant', 'keras' (a file) or 'hf' (a folder)
    path: Optional[str] = None     # the file or folder
    alpha: Optional[float] = None  # a variant's width multiplier
    rows: Optional[int] = None     # a variant's input size


def read_weights(value, accepts):
    """What the --weights ``value`` names, as a Weights; an ArgumentError where it names nothing,
    saying what the caller ``accepts`` (words for the message)."""
    if isinstance(value, str) and value in ("imagenet", "none"):
        return Weights(value)
    path = files.path_str(value)
    if os.path.isdir(path):
        return Weights("hf", path)
    if os.path.lexists(path):  # a FIFO, a device, a broken link: the loader says which
        return Weights("keras", path)
    if _VARIANT.fullmatch(path):
        try:
            alpha, rows = parse_variant(path)
        except ArgumentError as exc:
            raise ArgumentError(f"--weights: {exc} (mobilenetv2 info shows them)") from None
        return Weights("variant", alpha=alpha, rows=rows)
    raise ArgumentError(f"--weights {path!r}: no such file or folder; --weights takes {accepts}")


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_model_args(p, weights="imagenet"):
    """--alpha, --size, --weights and --dtype; --weights defaults to ``weights`` ('imagenet' or
    'none'), --alpha and --size to None where not given (see model_args)."""
    from mobilenetv2.model import MAX_SIZE
    p.add_argument("--alpha", type=_finite_float, default=None,
                   help="width multiplier (default 1.0, or the variant's of --weights)")
    p.add_argument("--size", type=positive_int(MAX_SIZE), default=None,
                   help="input height and width (default 224, or the variant's of --weights)")
    if weights == "none":  # summary: the shapes and costs need no file (README, Command line)
        what = ("'imagenet' or a variant name such as 1.0_224 (checked against the 22 of mobilenetv2 info, "
                "with its alpha and size; no file is found, loaded or downloaded), 'none' (Keras's initial "
                "weights), or a Keras .h5 path (loaded: the summary is of the model it fits)")
    else:
        what = ("'imagenet' (found or downloaded), 'none' (Keras's initial weights), a variant name such as "
                "1.0_224 (its imagenet weights, with its alpha and size: mobilenetv2 info lists the 22), or a "
                "Keras .h5 path")
    p.add_argument("--weights", default=None if weights == MODEL_DEFAULTS["weights"] else weights,
                   help=f"{what} (default {weights!r})")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")


def model_args(args, command):
    """Check the model options of ``args`` (of add_model_args) and complete them: afterwards
    args.alpha and args.size are the model's, args.weights 'imagenet', 'none' or a file's path
    (a variant name becomes 'imagenet' with the variant's alpha and size).  An ArgumentError
    where a variant name comes with another --alpha or --size, where --weights is a folder (a
    Hugging Face checkpoint: classify takes one with --hf), and where any of them comes with
    classify's --hf (the checkpoint folder fixes all three)."""
    given = [f"--{k}" for k in MODEL_DEFAULTS if getattr(args, k) is not None]
    if getattr(args, "hf", None):
        if given:
            raise ArgumentError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply with "
                                "--hf: the checkpoint folder fixes the model, its weights and its input size")
        return
    for k, v in MODEL_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    weights = read_weights(args.weights, KERAS_WEIGHTS)
    if weights.kind == "hf":
        how = ("classify takes a checkpoint folder with --hf DIR" if command == "classify" else
               f"{command} reads Keras weights: {KERAS_WEIGHTS}")
        raise ArgumentError(f"--weights {weights.path!r} is a folder (a Hugging Face checkpoint?); {how}")
    if weights.kind == "variant":
        for flag, have, want in (("--alpha", args.alpha, weights.alpha), ("--size", args.size, weights.rows)):
            if flag in given and have != want:
                raise ArgumentError(f"{flag} {have:g} conflicts with --weights {args.weights}, whose "
                                    f"{flag[2:]} is {want:g}: drop {flag}, or give --weights imagenet "
                                    "with --alpha and --size")
        args.alpha, args.size, args.weights = weights.alpha, weights.rows, "imagenet"
    elif weights.kind == "keras":
        args.weights = weights.path
