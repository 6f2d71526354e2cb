"""The input batch both sides get: images (``load_image`` + ``preprocess_input``), a seeded
uniform [-1, 1] draw, or an ``.npy`` batch; NHWC float32 here, transposed for OTHER by its reader."""
import os

import numpy as np

from mobilenetv2 import files
from mobilenetv2.errors import is_whole
from mobilenetv2.tools.compare.errors import CompareError, open_input

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_IMAGES = 32  # every layer of both sides is kept for the diagnosis: ~0.1 GB per 224x224 image


def _image_paths(items):
    paths = []
    for item in items:
        if not isinstance(item, (str, bytes, os.PathLike)):
            raise CompareError(f"images must be paths of image files or folders, got {type(item).__name__} "
                               f"{str(item)[:80]!r}")
        item = files.path_str(item)
        if os.path.isdir(item):
            paths += sorted(os.path.join(item, f) for f in os.listdir(item)
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        else:
            paths.append(item)
    if not paths:
        raise CompareError(f"no images found in {list(map(os.fspath, items))}")
    if len(paths) > MAX_IMAGES:
        raise CompareError(f"{len(paths)} images given; compare runs at most {MAX_IMAGES} at once")
    return paths


def check_images(x, what):
    """Refuse an NHWC batch (``what`` names it) of no images or more than MAX_IMAGES (an empty
    batch compared nothing and agreed), or holding NaN or inf."""
    if not 1 <= len(x) <= MAX_IMAGES:
        raise CompareError(f"{what} holds {len(x)} images; compare runs 1 to {MAX_IMAGES} at once")
    if not np.isfinite(x).all():
        raise CompareError(f"{what} contains NaN or inf")


def make_input(hw, images=None, random=None, seed=0, batch=None):
    """(NHWC float32 batch, description).  Exactly one of images / random / batch, or none
    (one random image with seed 0).  ``hw``: OTHER's (H, W), or None where any (images and
    random ones then 224x224, a batch its own size)."""
    given = [v is not None for v in (images, random, batch)]
    if sum(given) > 1:
        raise CompareError("give one input: --images, --random or an .npy batch, not several")
    if images is not None:
        from mobilenetv2.processing.preprocessing import load_image, preprocess_input
        paths = _image_paths(images if isinstance(images, (list, tuple)) else [images])
        x = np.stack([load_image(p, target_size=hw or (224, 224)) for p in paths])
        return preprocess_input(x.astype(np.float32)), f"{len(paths)} image(s) via load_image + preprocess_input"
    if batch is not None:
        if isinstance(batch, (str, bytes, os.PathLike)):
            from mobilenetv2.tools.compare.dump_reader import read_npy
            batch = files.path_str(batch)
            try:  # a regular file (a FIFO refused at once), its header checked against its size
                with open_input(batch, "input batch") as f:
                    x = read_npy(f, os.fstat(f.fileno()).st_size, f"input batch {batch!r}")
            except (OSError, ValueError, EOFError) as exc:
                if isinstance(exc, CompareError):
                    raise
                raise CompareError(f"input batch {batch!r} is not an .npy array: {exc}") from None
            src = f"the batch in {batch!r}"
        else:
            x, src = np.asarray(batch), "the given batch"
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.dtype.kind != "f":
            raise CompareError(f"input batch must be a float (N, H, W, 3) array, got {x.dtype} {x.shape}")
        if x.shape[3] != 3 and x.shape[1] == 3:
            x = x.transpose(0, 2, 3, 1)
        if (hw is not None and tuple(x.shape[1:3]) != tuple(hw)) or x.shape[3] != 3:
            raise CompareError(f"input batch has shape {x.shape}; OTHER takes (N, {hw[0] if hw else 'H'}, "
                               f"{hw[1] if hw else 'W'}, 3)")
        check_images(x, "input batch")
        with np.errstate(over="ignore"):
            x32 = np.ascontiguousarray(x, np.float32)  # what both sides are fed
        if not np.isfinite(x32).all():  # a float64 value past float32's range: inf once fed
            raise CompareError(f"input batch holds values beyond float32's range (up to {np.max(np.abs(x)):.3g}; "
                               f"float32 ends at {np.finfo(np.float32).max:.3g}): compare feeds both sides float32")
        return x32, src
    n = 1 if random is None else random
    if not is_whole(n) or not 1 <= n <= MAX_IMAGES:
        raise CompareError(f"--random takes 1 to {MAX_IMAGES} images (a whole number), got {n!r}")
    if not is_whole(seed) or seed < 0:
        raise CompareError(f"the random input's seed must be a whole number from 0 up, got {seed!r}")
    n, seed, hw = int(n), int(seed), hw or (224, 224)
    x = np.random.default_rng(seed).uniform(-1, 1, (n, hw[0], hw[1], 3)).astype(np.float32)
    return x, f"{n} random image(s), uniform [-1, 1], seed {seed}"
