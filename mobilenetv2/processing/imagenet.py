"""ImageNet class names: ``decode_predictions`` as Keras has it, from the table in data/."""
import functools
from importlib import resources

import numpy as np

from mobilenetv2.errors import ArgumentError, as_array, is_whole

NUM_CLASSES = 1000


@functools.lru_cache(maxsize=1)
def class_table():
    """[(wnid, name)] for the 1000 classes, in index order (see data/README.md for its source)."""
    text = resources.files("mobilenetv2").joinpath("data/imagenet_classes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    table = [(wnid, name) for _, wnid, name in rows]
    assert [int(i) for i, _, _ in rows] == list(range(NUM_CLASSES)), "corrupt class table"
    return table


def decode_predictions(preds, top=5):
    """For each row of ``preds`` (N, 1000): the ``top`` classes as (wnid, name, score), best first.

    A list of N lists of ``min(top, 1000)`` tuples; each score is the row's own NumPy scalar.
    The same selection as Keras's (ties included); unlike Keras, ``top`` below 1 is an error
    rather than a silent "all 1000" (top=0) or "all but -top" (top<0), and so are scores that
    are not real numbers (bool, complex, strings, objects) or NaN (which sorts above every score).
    """
    if not is_whole(top) or top < 1:
        raise ArgumentError(f"top must be a positive integer, got {top!r}")
    top = int(top)  # (-np.uint8(5) is 251: the slice below would keep 749 classes)
    preds = as_array(preds, "decode_predictions' preds")
    if preds.ndim != 2 or preds.shape[1] != NUM_CLASSES:
        raise ArgumentError("decode_predictions expects a batch of predictions (a 2D array of shape "
                            f"(samples, {NUM_CLASSES})), got an array of shape {preds.shape}")
    if preds.dtype.kind not in "iuf":
        raise ArgumentError(f"decode_predictions' preds must be real-valued scores, got dtype {preds.dtype}")
    rows = np.flatnonzero(np.isnan(preds).any(axis=1)) if preds.dtype.kind == "f" else ()
    if len(rows):
        raise ArgumentError(f"decode_predictions' preds has NaN scores (row {', '.join(map(str, rows[:5]))}"
                            f"{', ...' if len(rows) > 5 else ''}): the model's output is not usable")
    table = class_table()
    results = []
    for pred in preds:
        best = pred.argsort()[-top:][::-1]
        result = [table[i] + (pred[i],) for i in best]
        result.sort(key=lambda r: r[2], reverse=True)
        results.append(result)
    return results
