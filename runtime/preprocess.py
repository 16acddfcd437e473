"""Raw pixels -> model input, in numpy only: the one preprocessing used by datasets, evaluation and device.

Images are uint8 gray with 255 = paper, 0 = ink (Omniglot's convention). ``to_model_input`` turns
any accepted image array into float32 ``1 - pixel/255`` of shape (N, H, W, 1) at the model's size.
"""
from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=64)
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix whose row i averages the input cells covered by output cell i."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(np.floor(lo)), min(int(np.ceil(hi)), n_in)):
            m[i, j] = min(hi, j + 1) - max(lo, j)
        m[i] /= m[i].sum()
    return m.astype(np.float32)


def resize_area(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resample float images (N, H, W) or (H, W) to ``size`` = (h, w); returns float32."""
    images = np.asarray(images, dtype=np.float32)
    h, w = size
    if images.shape[-2:] == (h, w):
        return images
    rh = _area_matrix(images.shape[-2], h)
    rw = _area_matrix(images.shape[-1], w)
    return np.einsum("ij,...jk,lk->...il", rh, images, rw, optimize=True).astype(np.float32)


def to_gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) with C in {1, 3, 4} -> (N, H, W) float32 in pixel units (0..255)."""
    x = np.asarray(images)
    if x.ndim == 3:
        return x.astype(np.float32)
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {x.shape}")
    c = x.shape[-1]
    if c == 1:
        return x[..., 0].astype(np.float32)
    if c in (3, 4):
        rgb = x[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    raise ValueError(f"images have {c} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)")


def to_model_input(images: np.ndarray, size: tuple[int, int], invert: bool = True) -> np.ndarray:
    """uint8-scale images (N, H, W[, C]) -> float32 (N, h, w, 1) in [0, 1], ink = 1 when ``invert``.

    Float arrays with max <= 1.0 are taken as already scaled to [0, 1] (paper = 1).
    """
    x = np.asarray(images)
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise ValueError("images contain NaN or infinite values")
        if x.size and float(x.max()) <= 1.0:
            x = x * 255.0
    gray = to_gray(x)
    gray = resize_area(gray, size) / 255.0
    gray = np.clip(gray, 0.0, 1.0)
    if invert:
        gray = 1.0 - gray
    return gray[..., None].astype(np.float32)


def to_pixels(x: np.ndarray, invert: bool = True, value_range=(0.0, 1.0)) -> np.ndarray:
    """Model input (N, h, w, 1) -> uint8 gray pixels (N, h, w), 255 = paper: the inverse of ``to_model_input``.

    Kept images go through ``to_model_input`` again (with any bundle's settings) and give back the same
    int8 input up to rounding, so a state can be re-embedded by another backbone.
    """
    lo, hi = (float(v) for v in value_range)
    x01 = np.asarray(x, np.float32)[..., 0]
    if (lo, hi) != (0.0, 1.0):
        x01 = (x01 - np.float32(lo)) / np.float32(hi - lo)
    gray = 1.0 - x01 if invert else x01
    return np.clip(np.rint(gray * np.float32(255.0)), 0, 255).astype(np.uint8)


# What ``to_model_input`` does, as recorded in a model's config.json and a bundle's manifest ("preprocess").
SETTINGS = {"color": "L", "resize": "area", "invert": True, "range": [0.0, 1.0]}


def settings() -> dict:
    """A fresh copy of ``SETTINGS`` (callers may change theirs)."""
    return {k: list(v) if isinstance(v, list) else v for k, v in SETTINGS.items()}
