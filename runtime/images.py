"""Whatever the user passes as images → float32 model input (N, H, W, 1), via ``preprocess.to_model_input``.

Accepted: a file path (str or Path) or a list of them (decoded with Pillow, imported only then); one
numpy image (H, W) or (H, W, C) with C in {1, 3, 4}; a batch (N, H, W) or (N, H, W, C); or a list mixing
paths and single images of any sizes. An array (H, W, C) whose last axis is 1–4 is one image with C
channels; with a larger last axis it is a batch (N, H, W) of gray images. uint8 arrays are pixels
(255 = paper); float arrays are pixels too unless their maximum is <= 1.0 (then [0, 1], 1 = paper).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import InputError, one_line
from .preprocess import to_model_input

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
_CHANNELS = (1, 3, 4)


def read_image(path) -> np.ndarray:
    """Decode an image file with Pillow.

    Args:
      path: str or Path.
    Returns:
      uint8 array (H, W) for gray/bilevel/palette images or (H, W, 3|4) for color.
    Raises:
      InputError: Pillow missing, file missing or not decodable.
    """
    try:
        from PIL import Image
    except ImportError:
        raise InputError("reading image files needs Pillow (pip install pillow), or pass numpy arrays") from None
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such image file")
    try:
        with Image.open(p) as im:
            im.load()
            if im.mode in ("LA", "PA", "RGBA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
            elif im.mode in ("RGB", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode != "L":
                im = im.convert("L")
            return np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise InputError(f"{p}: cannot decode image ({one_line(e)})") from None


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _check_array(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise InputError(f"{what}: unsupported dtype {a.dtype}; pass uint8 pixels or floats")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise InputError(f"{what} contains NaN or infinite values")
    if a.dtype.kind == "b":
        a = a.astype(np.uint8) * 255
    return a


def _single(a: np.ndarray, what: str) -> np.ndarray:
    """One image (H, W) or (H, W, C) -> batch of one (1, H, W[, C])."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3 and a.shape[-1] in _CHANNELS:
        return a[None]
    if a.ndim == 3 and a.shape[-1] <= 4:
        raise InputError(f"{what} has {a.shape[-1]} channels (shape {a.shape}); expected 1 (gray), 3 (RGB) or 4 (RGBA)")
    raise InputError(f"{what} has shape {a.shape}; expected (H, W) or (H, W, C)")


def _to_input(batch: np.ndarray, size, invert: bool, lo: float, hi: float, what: str) -> np.ndarray:
    if min(batch.shape[1:3]) < 1:
        raise InputError(f"{what} is empty (shape {batch.shape})")
    try:
        x = to_model_input(batch, size, invert=invert)
    except ValueError as e:
        raise InputError(f"{what}: {e}") from None
    if (lo, hi) != (0.0, 1.0):
        x = (np.float32(lo) + np.float32(hi - lo) * x).astype(np.float32)
    return x


def as_model_input(images, input_shape, preprocess: dict | None = None) -> np.ndarray:
    """Turn user images into model input.

    Args:
      images: see the module docstring.
      input_shape: (H, W, 1) of the model.
      preprocess: the bundle's ``input.preprocess`` (``invert``, ``range``); None for the defaults.
    Returns:
      float32 (N, H, W, 1), N >= 1.
    Raises:
      InputError: no images, wrong shape or channel count, NaN/inf, unreadable file, unsupported dtype.
    """
    pre = preprocess or {}
    invert = bool(pre.get("invert", True))
    lo, hi = (float(v) for v in pre.get("range", (0.0, 1.0)))
    size = (int(input_shape[0]), int(input_shape[1]))

    if _is_path(images):
        images = [images]
    if isinstance(images, np.ndarray):
        a = _check_array(images, "image array")
        if a.ndim == 4:
            if a.shape[-1] not in _CHANNELS:
                raise InputError(f"image batch has {a.shape[-1]} channels (shape {a.shape}); expected 1, 3 or 4")
            batch = a
        elif a.ndim == 3 and a.shape[-1] > 4:
            batch = a
        else:
            batch = _single(a, "image")
        if len(batch) == 0:
            raise InputError("no images given (empty array)")
        return _to_input(batch, size, invert, lo, hi, "image array")
    if not isinstance(images, (list, tuple)):
        raise InputError(f"images must be a path, a numpy array or a list of them, got {type(images).__name__}")
    if len(images) == 0:
        raise InputError("no images given (empty list)")
    parts = []
    for i, item in enumerate(images):
        if _is_path(item):
            what = str(item)
            a = _check_array(read_image(item), what)
        else:
            what = f"image {i}"
            try:
                a = np.asarray(item)
            except Exception as e:
                raise InputError(f"{what}: not an image ({one_line(e)})") from None
            a = _check_array(a, what)
        parts.append(_to_input(_single(a, what), size, invert, lo, hi, what))
    return np.concatenate(parts).astype(np.float32)
