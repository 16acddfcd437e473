"""scikit-learn's bundled handwritten digits as a cross-domain few-shot check (``--data digits``).

1,797 digits 0-9, 8x8 pixels of 17 gray levels (UCI "Optical Recognition of Handwritten Digits",
Alpaydin & Kaynak 1998; shipped inside scikit-learn, BSD licence: nothing is downloaded). Each digit is
turned into the datasets' convention (paper = 255, dark ink), framed by ``PAD`` pixels of paper so it
sits inside the frame as an Omniglot drawing does, and area-resized to the model's input size.
"""

from __future__ import annotations

import numpy as np

from metalite.runtime.preprocess import resize_area

from .errors import DataError

PAD = 2  # paper pixels around the 8x8 digit: the digit fills 8/12 of the frame (MNIST: 20/28)


def load_digits_images(image_size: int):
    """(images (N, S, S) uint8, labels (N,), class names) of scikit-learn's digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "--data digits needs scikit-learn: pip install 'metalite[digits]'"
        ) from None
    d = load_digits()
    ink = np.asarray(d.images, np.float64) / 16.0  # 0 = paper, 1 = full ink
    paper = 255.0 * (1.0 - np.pad(ink, ((0, 0), (PAD, PAD), (PAD, PAD))))
    images = np.clip(np.rint(resize_area(paper, (image_size, image_size))), 0, 255).astype(np.uint8)
    return images, np.asarray(d.target, np.int64), [str(i) for i in range(10)]
