"""Helpers of the training tests: a small synthetic ``folder:`` dataset (class folders of ink blobs, no TensorFlow)."""

from pathlib import Path

import numpy as np
from PIL import Image


def _shape_image(cls, rng, size=28):
    """A class-specific blob pattern (paper 255, ink 0) with jitter: easy but not trivial classes."""
    crng = np.random.default_rng(1000 + cls)
    img = np.full((size, size), 255, np.uint8)
    for _ in range(3):
        y, x = crng.integers(4, size - 8, 2) + rng.integers(-1, 2, 2)
        h, w = crng.integers(3, 8, 2)
        img[y : y + h, x : x + w] = 0
    return img


def make_folder(root, classes=8, per_class=6, size=28, seed=0):
    """``root/classNN/i.png``: ``classes`` folders of ``per_class`` jittered blob images each; ``root``."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = Path(root) / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_shape_image(c, rng, size)).save(d / f"{i}.png")
    return Path(root)
