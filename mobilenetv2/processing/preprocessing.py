"""Images in, network inputs out: Pillow loading and Keras's 'tf' preprocessing."""
import io
import math
import os
import struct
import warnings
import zlib

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mobilenetv2 import files
from mobilenetv2.errors import ArgumentError, ImageError, as_array, is_whole, real

INTERPOLATIONS = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING,
}


def preprocess_input(x):
    """Keras's mode 'tf': ``x / 127.5 - 1``, mapping [0, 255] to [-1, 1].

    A new array of the input's shape (the input is not changed): float64 input stays float64
    (the float64 reference path); integer, float16 and float32 input give float32, as Keras's
    do for integers.  Strings, bools and complex numbers are an ArgumentError.
    """
    x = as_array(x, "preprocess_input's input")
    if x.dtype.kind not in "uif":
        raise ArgumentError(f"preprocess_input takes numeric pixel values, got dtype {x.dtype}")
    dt = np.float64 if x.dtype == np.float64 else np.float32
    x = x.astype(dt)
    return x / dt(127.5) - dt(1.0)


# The formats load_image reads (Pillow's names).  Not the others Pillow knows: EPS runs
# Ghostscript, AVIF/JPEG 2000/PSD/... go through large decoders no one here needs.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
MAX_PIXELS = 64 * 1024 * 1024  # 8192x8192: decoded as RGB, 192 MB; Pillow's own bomb limit applies too
MAX_TARGET = 8192              # per side of target_size (a 8192x8192x3 uint8 array is 192 MB)
# What Pillow's decoders raise on damaged input (EXIF parsing raises SyntaxError, AVIF RuntimeError).
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, RuntimeError, EOFError, IndexError, KeyError,
                   TypeError, OverflowError, struct.error, zlib.error, UnicodeError, AttributeError,
                   ZeroDivisionError)


def _size_pair(target_size):
    """(height, width) from an int or an ordered pair (a tuple, list or 1-d array): not a dict or
    a set, which unpack to their keys or in hash order."""
    pair = (target_size, target_size) if is_whole(target_size) else target_size
    try:
        if not isinstance(pair, (tuple, list, np.ndarray)):
            raise TypeError
        h, w = pair
    except (TypeError, ValueError):
        raise ArgumentError(f"target_size must be an int or (height, width), got {target_size!r}") from None
    for v in (h, w):
        if not is_whole(v) or not 1 <= v <= MAX_TARGET:
            raise ArgumentError(f"target_size must be whole numbers from 1 to {MAX_TARGET}, got "
                                f"{target_size!r}")
    return int(h), int(w)


MAX_TILE_PIXELS = 1 << 20  # a TIFF tile larger than its image is still decoded whole: this much


def _check_tiles(img, name):
    """A TIFF's tiles are decoded whole, each into a buffer of the tile's declared size, however
    small the image: a 64x64 image in one 26736x26736 deflate tile took 2 GB from a 2 MB file.
    Tiles may be as large as the image, or MAX_TILE_PIXELS."""
    tags = getattr(img, "tag_v2", None)
    if img.format != "TIFF" or tags is None:
        return
    tw, th = tags.get(322), tags.get(323)  # TileWidth, TileLength
    if isinstance(tw, int) and isinstance(th, int) and tw * th > max(img.width * img.height, MAX_TILE_PIXELS):
        raise ImageError(f"image {name!r} is {img.width}x{img.height} and declares tiles of "
                         f"{tw}x{th}, each decoded whole: refused (tiles larger than the image and "
                         f"than {MAX_TILE_PIXELS:,} pixels)")


def _open_regular(path):
    """(file descriptor, name) of the image file ``path``: FileNotFoundError where it does not
    exist, ImageError where it is not a regular file (a FIFO or device at once, without waiting)."""
    name = files.path_str(path)
    try:
        return files.open_regular(path, "image file"), name
    except FileNotFoundError:
        raise FileNotFoundError(2, "image file not found", name) from None
    except IsADirectoryError:
        raise ImageError(f"{name!r} is not a file (an image file path was expected)") from None
    except files.NotRegularFile as exc:  # it says which: a FIFO, a device, a socket
        raise ImageError(str(exc)) from None


def check_image_paths(paths):
    """Raise what load_image would for the first of ``paths`` that is missing, unreadable or not
    a regular file, without decoding anything: the commands check their images before loading a
    model (a typo in an image path is said at once, not after the weights)."""
    for path in paths:
        os.close(_open_regular(path)[0])


def _open(path):
    """A loaded Pillow image of one of FORMATS (or the PIL image given), EXIF orientation applied,
    and its name; ImageError where it cannot be (ArgumentError for a PIL image without pixels); a
    path must be a regular file (a FIFO or device
    is refused at once, without waiting on it)."""
    owned = img = None
    name = "<PIL image>" if isinstance(path, Image.Image) else getattr(path, "name", None) or "<file object>"
    if isinstance(path, Image.Image):  # loaded and turned as a file's image: load_image(Image.open(p)) is
        img = path                     # load_image(p)
    elif isinstance(path, (str, bytes, os.PathLike)):
        if "\0" in files.path_str(path):  # (os.open's own ValueError: "embedded null byte")
            hint = " (an image's content? pass io.BytesIO(data))" if isinstance(path, bytes) else ""
            raise ArgumentError(f"load_image's path contains a NUL character, which no file name has{hint}")
        fd, name = _open_regular(path)
        owned = path = os.fdopen(fd, "rb")
    elif isinstance(path, io.TextIOBase):  # (read as text, an image is a UnicodeDecodeError: "corrupt?")
        raise ArgumentError(f"load_image reads images from binary files: open {name!r} with mode 'rb', not "
                            f"{getattr(path, 'mode', 'text')!r}")
    elif not hasattr(path, "read"):
        raise ArgumentError(f"load_image takes a file path, a binary file or a PIL image, got "
                            f"{type(path).__name__}")
    try:
        if img is None:
            with warnings.catch_warnings():  # Pillow warns from its own limit, which is at least ours:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused just below
                img = Image.open(path, formats=FORMATS)
            limit = min(MAX_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
            if img.width * img.height > limit:
                raise ImageError(f"image {name!r} is {img.width}x{img.height}, too large to decode "
                                 f"safely (more than {limit} pixels)")
            _check_tiles(img, name)
        img.load()
        if img.format == "PPM" and img.mode == "I":  # a PGM of maxval 256 to 65535, which Pillow
            img = img.convert("I;16")                # reads as 0..65535 in mode I: 16 bits, however dark
        img = ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise ImageError(f"{name!r} is not an image file of a format load_image reads "
                         f"({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image {name!r} is too large to decode safely: {exc}") from None
    except MemoryError:
        raise ImageError(f"image {name!r}: out of memory while decoding it") from None
    except _DECODER_ERRORS as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"image {name!r} cannot be read (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None
    finally:
        if owned is not None:
            owned.close()
    if img.width < 1 or img.height < 1:  # (a PIL image made so: load_image's resize made it black,
        error = ArgumentError if isinstance(path, Image.Image) else ImageError  # hf_preprocess's divided by 0)
        raise error(f"image {name!r} is {img.width}x{img.height}: it has no pixels")
    return img, name


def _to_rgb(img):
    """Any Pillow mode to 8-bit RGB, as Keras's ``load_img`` does for 8-bit modes.

    Alpha is dropped (not composited), palettes are expanded, CMYK is converted.  Deeper grey is
    scaled to 8 bits, not clipped: I;16 always by 255/65535 (a 16-bit PGM too, which Pillow reads
    as I and _open makes I;16); other I and F (whose range Pillow does not record) by 255/65535
    only when a value exceeds 255, else taken as 0..255 already.
    Integer modes are scaled in integers (one uint32 copy, rounding to nearest: x*255/65535 is
    never a half), F in one float32 copy changed in place: never float64 copies of the image.
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img)
        scale = img.mode.startswith("I;16") or a.max(initial=0) > 255
        a = np.clip(a, 0, 65535 if scale else 255).astype(np.uint32)
        if scale:
            a *= 255
            a += 32767
            a //= 65535
        img = Image.fromarray(a.astype(np.uint8), "L")
    elif img.mode == "F":
        a = np.array(img, dtype=np.float32)
        scale = a.max(where=np.isfinite(a), initial=0) > 255
        np.nan_to_num(a, copy=False, nan=0.0, posinf=65535.0 if scale else 255.0, neginf=0.0)
        if scale:
            a *= np.float32(255.0 / 65535.0)
        np.rint(a, out=a)
        np.clip(a, 0, 255, out=a)
        img = Image.fromarray(a.astype(np.uint8), "L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # same colours; spares Pillow's warning about palette transparency
    return img.convert("RGB")


def _center_crop(img, aspect, fraction, name):
    """The central region with the target's aspect ratio, of ``fraction`` of the largest such
    region: its width and height rounded to whole pixels (halves up), then centred."""
    w, h = img.size
    cw, ch = (w, w / aspect) if w / h < aspect else (h * aspect, h)
    pw, ph = (min(n, math.floor(v * fraction + 0.5)) for v, n in ((cw, w), (ch, h)))
    if pw < 1 or ph < 1:
        raise ImageError(f"crop={fraction!r} of image {name!r} ({w}x{h}) at the target's aspect "
                         f"ratio is {cw * fraction:.3g}x{ch * fraction:.3g} pixels, which rounds to an "
                         "empty region: use a larger crop fraction")
    left, top = math.floor((w - pw) / 2 + 0.5), math.floor((h - ph) / 2 + 0.5)
    return img.crop((left, top, left + pw, top + ph))


def load_image(path, target_size=(224, 224), interpolation="bilinear", crop=None):
    """Read an image as an (H, W, 3) uint8 RGB array of ``target_size`` (an int or (H, W),
    each from 1 to MAX_TARGET).

    ``path`` is a file path, an open binary file or a PIL image, in one of FORMATS (JPEG, PNG,
    BMP, GIF, TIFF, WebP, PPM); others are refused.  EXIF orientation is applied.
    ``crop='center'`` (or a fraction such as 0.875 of the central region) crops to the target's
    aspect ratio before resizing; the default resizes the whole image, as Keras's ``load_img``.
    A damaged or oversized file raises ImageError (a ValueError).
    """
    h, w = _size_pair(target_size)
    if not isinstance(interpolation, str) or interpolation not in INTERPOLATIONS:
        raise ArgumentError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
    if isinstance(crop, str) and crop == "center":
        crop = 1.0
    fraction = None if crop is None else real(crop)
    if crop is not None and (fraction is None or not 0 < fraction <= 1):
        raise ArgumentError(f"crop must be None, 'center' or a fraction in (0, 1], got {crop!r}")
    img, name = _open(path)
    try:
        img = _to_rgb(img)
        if crop is not None:
            img = _center_crop(img, w / h, fraction, name)
        if img.size != (w, h):
            img = img.resize((w, h), INTERPOLATIONS[interpolation])
    except MemoryError:
        raise ImageError(f"image {name!r}: out of memory while converting it") from None
    except _DECODER_ERRORS as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"image {name!r} cannot be converted: {type(exc).__name__}: {exc}") from None
    return np.array(img, dtype=np.uint8)  # the caller's, writable (np.asarray's view of Pillow's bytes is not)
