"""torch's antialiased bilinear resize of uint8 images (``interpolate(mode="bilinear",
antialias=True)`` on a uint8 tensor, what ``torchvision.transforms.v2.functional.resize`` runs on
CPU), bit for bit, in NumPy.  Images are (H, W, C) uint8.

The filter is Pillow's: output pixel i of an axis (input n, output m, scale s = n / m) averages
the inputs around its centre c = s * (i + 0.5) with the triangle weights
w(j) = max(0, 1 - |j + 0.5 - c| / max(s, 1)), j from ``int(c - r + 0.5)`` (at least 0) up to,
not including, ``int(c + r + 0.5)`` (at most n), r = max(s, 1), divided by their sum, in float64.  What
differs from Pillow is the fixed point: torch rounds the weights to integers with p fractional
bits, p the largest up to 22 that keeps every rounded weight of the axis below 2**15 (int16),
where Pillow always takes 22.  Each pass is then
``clamp((2**(p-1) + sum(k_j * pixel_j)) >> p, 0, 255)`` in integers, the horizontal pass first
(its uint8 result feeds the vertical one); an axis whose size does not change is not resampled.
"""
import math

import numpy as np

from mobilenetv2.errors import ArgumentError, is_whole


def aa_taps(n, m):
    """The taps of one axis resized from n to m: (first, weights, precision), first (m,) the
    index of each output's first input, weights (m, taps) the fixed-point weights (0 past an
    output's last input), precision p their fractional bits."""
    scale = n / m
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    taps = int(math.ceil(support)) * 2 + 1
    centre = scale * (np.arange(m) + 0.5)
    first = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(centre + support + 0.5).astype(np.int64), n) - first
    w = np.zeros((m, taps))
    total = np.zeros(m)
    for j in range(taps):  # summed tap by tap, in torch's order (np.sum would pair them)
        x = np.abs((j + first - centre + 0.5) * invscale)
        wj = np.where((j < count) & (x < 1.0), 1.0 - x, 0.0)
        w[:, j] = wj
        total += wj
    w = np.divide(w, total[:, None], out=w, where=total[:, None] != 0)
    w_max = w.max()
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    return first, np.trunc(0.5 + w * (1 << precision)).astype(np.int32), precision


CHUNK_VALUES = 1 << 20  # int32 sums held at once (4 MiB, and as much for one tap's products): a 64-megapixel upsample stays small


def _resample_rows(u, m):
    """One pass along axis 0 of a contiguous uint8 (N, L, C) array to (m, L, C), a band of L at a
    time (whole rows gathered: the horizontal pass runs on the transposed image, 4-6x faster than
    gathering columns)."""
    n, length, channels = u.shape
    first, k, precision = aa_taps(n, m)
    idx = [np.minimum(first + j, n - 1) for j in range(k.shape[1])]  # past an output's last input: weight 0
    weights = [k[:, j, None, None] for j in range(k.shape[1])]
    out = np.empty((m, length, channels), np.uint8)
    band = max(1, CHUNK_VALUES // (m * channels))
    for start in range(0, length, band):
        part = u[:, start:start + band]
        acc = np.full((m,) + part.shape[1:], 1 << (precision - 1), np.int32)  # < 255 * (2**p + taps)
        gathered, term = np.empty(acc.shape, np.uint8), np.empty(acc.shape, np.int32)
        for ij, kj in zip(idx, weights):  # into buffers made once: no array allocated per tap
            np.take(part, ij, axis=0, out=gathered)
            np.multiply(gathered, kj, out=term)
            acc += term
        acc >>= precision
        out[:, start:start + band] = np.clip(acc, 0, 255, out=acc)
    return out


def resize_bilinear_aa_u8(u, h, w):
    """A uint8 (H, W, C) image resized to (h, w) as torch resizes a uint8 tensor with
    ``interpolate(size=(h, w), mode="bilinear", antialias=True, align_corners=False)``."""
    u = np.asarray(u)
    if u.dtype != np.uint8 or u.ndim != 3 or 0 in u.shape:
        raise ArgumentError(f"resize_bilinear_aa_u8 takes an (H, W, C) uint8 image, got {u.shape} {u.dtype}")
    if not (is_whole(h) and is_whole(w) and h >= 1 and w >= 1):
        raise ArgumentError(f"resize_bilinear_aa_u8's size must be two whole numbers from 1, got {(h, w)!r}")
    h, w = int(h), int(w)
    if w != u.shape[1]:  # the horizontal pass first: its uint8 result feeds the vertical one
        u = _resample_rows(np.ascontiguousarray(u.transpose(1, 0, 2)), w).transpose(1, 0, 2)
    if h != u.shape[0]:
        u = _resample_rows(np.ascontiguousarray(u), h)
    return np.ascontiguousarray(u)
