"""Images in, network inputs out: Pillow loading and Keras's 'tf' preprocessing."""
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MIN_SIZE = 32
INTERPOLATIONS = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING,
}


def preprocess_input(x):
    """Keras's mode 'tf': ``x / 127.5 - 1``, mapping [0, 255] to [-1, 1].

    Integer and float32 input gives float32, as Keras does; float64 input stays float64 (the
    float64 reference path).
    """
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise ValueError(f"preprocess_input takes numeric pixel values, got dtype {x.dtype}")
    dt = np.float64 if x.dtype == np.float64 else np.float32
    x = x.astype(dt)
    return x / dt(127.5) - dt(1.0)


def _size_pair(target_size):
    if isinstance(target_size, (int, np.integer)):
        target_size = (target_size, target_size)
    h, w = (int(v) for v in target_size)
    if h < 1 or w < 1:
        raise ValueError(f"target_size must be positive, got {target_size!r}")
    return h, w


def _open(path):
    if isinstance(path, Image.Image):
        return path, "<PIL image>"
    name = getattr(path, "name", None) or "<file object>"
    if isinstance(path, (str, os.PathLike)):
        name = os.fspath(path)
        if not os.path.exists(name):
            raise FileNotFoundError(2, "image file not found", name)
        if not os.path.isfile(name):
            raise ValueError(f"{name!r} is not a file (an image file path was expected)")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError:
        raise ValueError(f"{name!r} is not an image file Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image {name!r} is too large to decode safely: {exc}") from None
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"image {name!r} cannot be read (truncated or corrupt?): {exc}") from None
    return img, name


def _to_rgb(img):
    """Any Pillow mode to 8-bit RGB, as Keras's ``load_img`` does for 8-bit modes.

    Alpha is dropped (not composited), palettes are expanded, CMYK is converted.  Deeper grey is
    scaled to 8 bits, not clipped: I;16 always by 255/65535; I and F (whose range Pillow does
    not record) by 255/65535 only when a value exceeds 255, else taken as 0..255 already.
    """
    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # same colours; spares Pillow's warning about palette transparency
    return img.convert("RGB")


def _center_crop(img, aspect, fraction):
    """The central region with the target's aspect ratio, of ``fraction`` of the largest such region."""
    w, h = img.size
    cw, ch = (w, w / aspect) if w / h < aspect else (h * aspect, h)
    cw, ch = cw * fraction, ch * fraction
    left, top = (w - cw) / 2, (h - ch) / 2
    box = tuple(int(round(v)) for v in (left, top, left + cw, top + ch))
    return img.crop(box)


def load_image(path, target_size=(224, 224), interpolation="bilinear", crop=None):
    """Read an image as an (H, W, 3) uint8 RGB array of ``target_size`` (an int or (H, W)).

    ``path`` is a file path, an open binary file or a PIL image.  EXIF orientation is applied.
    ``crop='center'`` (or a fraction such as 0.875 of the central region) crops to the target's
    aspect ratio before resizing; the default resizes the whole image, as Keras's ``load_img``.
    """
    h, w = _size_pair(target_size)
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    if crop == "center":
        crop = 1.0
    if crop is not None and not (isinstance(crop, (int, float)) and 0 < crop <= 1):
        raise ValueError(f"crop must be None, 'center' or a fraction in (0, 1], got {crop!r}")
    img, name = _open(path)
    img = ImageOps.exif_transpose(img)
    if img.width < MIN_SIZE or img.height < MIN_SIZE:
        raise ValueError(f"image {name!r} is {img.width}x{img.height}; "
                         f"MobileNetV2 needs at least {MIN_SIZE}x{MIN_SIZE}")
    img = _to_rgb(img)
    if crop is not None:
        img = _center_crop(img, w / h, float(crop))
    if img.size != (w, h):
        img = img.resize((w, h), INTERPOLATIONS[interpolation])
    return np.asarray(img, dtype=np.uint8)
