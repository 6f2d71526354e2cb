"""Small generated image trees for the batch command's tests and benchmark (no files from anywhere)."""
import os

import numpy as np
from PIL import Image


def write_images(folder, n, seed=0, size=(48, 112), bad=()):
    """``n`` random RGB images of random sizes within ``size`` under ``folder`` (a third of them in a
    subfolder, alternately PNG and JPEG); ``bad`` names files to write with bytes that are no image.
    Returns the image paths in the order the batch command lists them (sorted walk)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    for i in range(n):
        h, w = rng.integers(size[0], size[1], 2)
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sub = "sub" if i % 3 == 0 else ""
        name = f"img{i:05d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(os.path.join(folder, sub, name))
    for name in bad:
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"this is not an image")
    return listed(folder)


def listed(folder):
    paths = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        paths += [os.path.join(root, f) for f in sorted(files)]
    return paths
