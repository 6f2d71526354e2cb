"""transformers' MobileNetV2ImageProcessor, both of transformers 5's backends bit for bit, and
DeepLabV3's ``post_process_semantic_segmentation``, with NumPy and Pillow alone.  Arrays are NHWC.

The processor: RGB uint8 image -> bilinear resize so the short side is ``size.shortest_edge`` and
the long side ``int(S * long / short)`` (or, where ``size`` is ``{height, width}``, to exactly
that) -> center crop ``crop_size`` (top ``(h - ch) // 2``, left
``(w - cw) // 2``; zero-padded where the image is smaller) -> rescale and normalize.  The two
backends (``BACKENDS``) differ in three places:

- "pillow" (``MobileNetV2ImageProcessorPil``, and transformers 4.x's processor): Pillow's resize
  (22-bit fixed-point weights); an odd padding's extra zero goes above / left;
  ``u * rescale_factor`` in float64, rounded to float32, then ``(x - mean) / std`` in float32.
- "torchvision" (``MobileNetV2ImageProcessor``, what ``AutoImageProcessor`` gives when
  torchvision is installed): torch's uint8 resize (``torch_resize``: the same filter, int16
  weights, so one level off Pillow's on 0-0.3 % of the values); the extra zero goes below /
  right; rescale and normalize fused in float32, ``(u - mean / r) / (std / r)`` with
  ``mean / r = float32(mean) * float32(1 / r)``, i.e. ``(u - 127.5) / 127.5`` for the hub's
  checkpoints.  That resize is what torchvision runs on CPUs with AVX2 or AVX-512 and on Arm
  64; elsewhere (older x86, GPUs) torchvision resizes in float32 and rounds, which can differ.
"""
import os

import numpy as np
from PIL import Image

from mobilenetv2 import files
from mobilenetv2.engines import c_kernels, native
from mobilenetv2.errors import ArgumentError, ImageError, is_items, is_whole
from mobilenetv2.formats.hf_config import ConfigError, ProcessorConfig, parse_processor_config, read_processor_config
from mobilenetv2.engines.numpy_kernels import resize_bilinear
from mobilenetv2.processing.preprocessing import MAX_PIXELS, _open, _to_rgb
from mobilenetv2.processing.torch_resize import resize_bilinear_aa_u8

BACKENDS = ("pillow", "torchvision")  # transformers 5's MobileNetV2ImageProcessorPil / MobileNetV2ImageProcessor


def processor_config(config):
    """A ProcessorConfig from a ProcessorConfig, a dict of preprocessor_config.json's keys, the
    path of such a file, or a checkpoint folder holding one.  A ProcessorConfig is checked as its
    JSON would be (one made or changed by hand, ``model.processor_config.shortest_edge = 0``, went
    unchecked into the resize: a bare ValueError, an empty crop, or infinities from a std of 0)."""
    if isinstance(config, ProcessorConfig):
        return parse_processor_config(config.to_json(), "<ProcessorConfig>", min_crop=1)
    if isinstance(config, dict):
        return parse_processor_config(config, "<dict>")
    if isinstance(config, (str, bytes, os.PathLike)):
        path = files.path_str(config)
        if os.path.isdir(path):
            try:
                path = files.folder_member(path, "preprocessor_config.json")
            except files.OutsideFolder as exc:
                raise ConfigError(path, str(exc)) from None
        return read_processor_config(path)
    raise TypeError("preprocessor_config must be a ProcessorConfig, a dict, or a path, "
                    f"got {type(config).__name__}")


def _rgb_image(image):
    """A Pillow RGB image from a path, file object, PIL image, or (H, W, 3) uint8 array; one
    without pixels (a side of 0, which the resize divides by) is an ArgumentError."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ArgumentError(f"an image array must be (H, W, 3) uint8 RGB with H, W >= 1, got "
                                f"{image.shape} {image.dtype}")
        return Image.fromarray(image, "RGB")
    return _to_rgb(_open(image)[0])  # (_open applied its EXIF orientation, refused an image of no pixels)


def resized_size(w, h, shortest_edge):
    """(width, height) with the short side ``shortest_edge`` and the long side
    ``int(S * long / short)`` (transformers' size rule), refused past MAX_PIXELS."""
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(shortest_edge * long / short)
    size = (shortest_edge, new_long) if w <= h else (new_long, shortest_edge)
    if size[0] * size[1] > MAX_PIXELS:  # a thin image: 1 x 60000 would become 256 x 15,360,000
        raise ImageError(f"the image is {w}x{h}; resized so its short side is {shortest_edge} it would "
                         f"be {size[0]}x{size[1]}, more than {MAX_PIXELS:,} pixels: refused")
    return size


def _crop_axis(side, crop, extra_zero_first):
    """(source, destination) slices of one axis for center_crop."""
    if crop <= side:
        start = (side - crop) // 2
        return slice(start, start + crop), slice(0, crop)
    pad = (crop - side + (1 if extra_zero_first else 0)) // 2  # an odd difference's extra zero: before, after
    return slice(0, side), slice(pad, pad + side)


def center_crop(u, ch, cw, backend="pillow"):
    """transformers' center crop of an (H, W, 3) uint8 image: the ch x cw window at top
    ``(H - ch) // 2``, left ``(W - cw) // 2``; along a side shorter than the crop, the whole side
    sits inside zeros.  An odd difference puts the extra zero above / to the left in the Pillow
    backend (``image_transforms.center_crop``: the side at ``ceil((crop - side) / 2)``) and below /
    to the right in the torchvision one (``tvF.pad`` by ``(crop - side) // 2`` before, the rest
    after).  The zeros are uint8 pixels, rescaled and normalized as black pixels are."""
    first = backend == "pillow"
    (src_h, dst_h), (src_w, dst_w) = _crop_axis(u.shape[0], ch, first), _crop_axis(u.shape[1], cw, first)
    if ch <= u.shape[0] and cw <= u.shape[1]:
        return u[src_h, src_w]
    out = np.zeros((ch, cw) + u.shape[2:], u.dtype)
    out[dst_h, dst_w] = u[src_h, src_w]
    return out


def hf_preprocess(image, preprocessor_config=None, backend="pillow"):
    """The model input for one image as transformers' MobileNetV2ImageProcessor computes it, bit
    for bit, as an NHWC float32 array (1, crop_h, crop_w, 3) (transformers' is NCHW:
    ``ours.transpose(0, 3, 1, 2)``).  ``image``: a path, file object, PIL image or uint8 RGB
    array; ``preprocessor_config``: a ProcessorConfig, dict, file or folder (default: 224's);
    ``backend``: "pillow" (``MobileNetV2ImageProcessorPil``, transformers 4.x's) or
    "torchvision" (transformers 5's default ``MobileNetV2ImageProcessor``): see the module's
    docstring for where they differ."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ArgumentError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    cfg = processor_config(preprocessor_config) if preprocessor_config is not None else ProcessorConfig()
    img = _rgb_image(image)
    if cfg.do_resize:
        size = (resized_size(*img.size, cfg.shortest_edge) if cfg.resize_height is None
                else (cfg.resize_width, cfg.resize_height))  # (width, height)
    if backend == "pillow":
        if cfg.do_resize and size != img.size:
            img = img.resize(size, Image.BILINEAR)
        u = np.asarray(img, dtype=np.uint8)
    else:
        u = np.asarray(img, dtype=np.uint8)
        if cfg.do_resize:
            u = resize_bilinear_aa_u8(u, size[1], size[0])
    if cfg.do_center_crop:
        u = center_crop(u, cfg.crop_height, cfg.crop_width, backend)
    x = _rescale_normalize(u, cfg) if backend == "pillow" else _rescale_normalize_fused(u, cfg)
    return np.ascontiguousarray(x[None])


def _rescale_normalize(u, cfg):
    """The Pillow backend's: ``u * rescale_factor`` in float64 to float32, then
    ``(x - mean) / std`` in float32."""
    x = u.astype(np.float64) * cfg.rescale_factor if cfg.do_rescale else u.astype(np.float64)
    x = x.astype(np.float32)
    if cfg.do_normalize:
        x = (x - np.asarray(cfg.image_mean, np.float32)) / np.asarray(cfg.image_std, np.float32)
    return x


def _rescale_normalize_fused(u, cfg):
    """The torchvision backend's, all in float32: with both steps, the mean and std divided by
    the factor first (``float32(mean) * float32(1 / rescale_factor)``), then ``(u - mean) / std``;
    a rescale alone is ``u * float32(rescale_factor)``.  (With neither, transformers returns the
    uint8 values themselves; here they come as float32, the same numbers.)"""
    x = u.astype(np.float32)
    mean, std = np.asarray(cfg.image_mean, np.float32), np.asarray(cfg.image_std, np.float32)
    if cfg.do_normalize and cfg.do_rescale:
        inverse = np.float32(1.0 / cfg.rescale_factor)
        return (x - mean * inverse) / (std * inverse)
    if cfg.do_normalize:
        return (x - mean) / std
    if cfg.do_rescale:
        return x * np.float32(cfg.rescale_factor)
    return x


def post_process_semantic_segmentation(logits, target_sizes=None):
    """transformers' ``post_process_semantic_segmentation`` on NHWC logits (N, h, w, labels): each
    image's logits resized to its target (height, width) (bilinear, align_corners False, in the
    logits' dtype; no crop undone), then the argmax over labels.  Without target sizes, the argmax
    of the logits.  Returns a list of (H, W) int64 class maps."""
    logits = np.asarray(logits)
    if logits.ndim != 4:
        raise ArgumentError(f"logits must be (N, h, w, labels) (NHWC), got shape {logits.shape}")
    if logits.dtype.kind != "f":  # integers resized in integers made a wrong map (torch refuses them)
        raise ArgumentError(f"logits must be floats (float32 or float64), got {logits.dtype}")
    if logits.shape[-1] < 1 or (target_sizes is not None and 0 in logits.shape[1:3]):
        raise ArgumentError(f"logits must have at least one label, and a pixel to resize from, got shape "
                            f"{logits.shape}")
    if target_sizes is not None and (isinstance(target_sizes, dict) or not is_items(target_sizes)
                                     or not hasattr(target_sizes, "__len__")):
        raise ArgumentError(f"target_sizes must be a list of (height, width), one per image, got {target_sizes!r}")
    if target_sizes is not None and len(target_sizes) != len(logits):
        raise ArgumentError(f"{len(target_sizes)} target sizes for {len(logits)} images")
    out = []
    for i in range(len(logits)):
        y = logits[i:i + 1]
        out.append(y[0].argmax(axis=-1) if target_sizes is None else
                   _resized_argmax(y, *_target_size(target_sizes[i])))
    return out


RESIZE_CHUNK_BYTES = 128 << 20  # float32: all 21 labels at once up to 1.6 megapixels


def _resized_argmax(y, th, tw):
    """The argmax over labels of one image's logits y (1, h, w, labels) resized to th x tw, a few
    labels at a time (at most RESIZE_CHUNK_BYTES of resized values, or one label): the resize is
    per label, so each chunk holds the whole resize's bits, and the first of equal maxima (or the
    first NaN) wins as in argmax.  All 21 labels of a 64-megapixel photo at once were 5.6 GB in
    float32, and several times that through NumPy in float64."""
    labels = y.shape[-1]
    step = max(1, RESIZE_CHUNK_BYTES // (th * tw * y.dtype.itemsize))
    best = index = None
    for k in range(0, labels, step):
        r = _resize_logits(np.ascontiguousarray(y[..., k:k + step]), th, tw)[0]
        arg = r.argmax(axis=-1)
        top = np.take_along_axis(r, arg[..., None], axis=-1)[..., 0]
        del r
        if best is None:
            best, index = top, arg
            continue
        better = (top > best) | (np.isnan(top) & ~np.isnan(best))
        np.copyto(best, top, where=better)
        np.copyto(index, arg + k, where=better)
    return index


def _target_size(size):
    """(height, width) of one image's class map: whole numbers from 1, the area up to MAX_PIXELS
    (a photo's own bound, which holds no side to 8192: a 12000x2000 panorama is a photo; the
    resized logits are made a few labels at a time)."""
    try:
        th, tw = size
    except (TypeError, ValueError):
        raise ArgumentError(f"a target size is (height, width), got {size!r}") from None
    if not (is_whole(th) and is_whole(tw)):
        raise ArgumentError(f"a target size is (height, width), two whole numbers, got {size!r}")
    th, tw = int(th), int(tw)
    if not (1 <= th and 1 <= tw and th * tw <= MAX_PIXELS):
        raise ArgumentError(f"target size {(th, tw)} must have sides from 1 and at most {MAX_PIXELS:,} "
                            "pixels (an image's own bound)")
    return th, tw


def _resize_logits(y, th, tw):
    """Bilinear resize (align_corners False) of one image's logits: float32 through the C kernel
    where it is built and takes the size (its NumPy twin's bits, tests/test_c_kernels_seg.py;
    65x65x21 -> 513x513 in 9 ms instead of 57 ms on a Zen 5 core), else the NumPy kernel."""
    if y.dtype == np.float32 and native.available() and max(th, tw) <= c_kernels.MAX_RESIZE:
        return c_kernels.resize_bilinear(y, th, tw, align_corners=False)
    return resize_bilinear(y, th, tw, align_corners=False)  # (a side past the C wrapper's bound: the same bits)
