"""Raw pixels -> model input, in numpy only: the one preprocessing used by datasets, evaluation and device.

Images are gray with 255 = paper, 0 = ink (Omniglot's convention), or RGB on a white background.
``to_model_input`` turns any accepted image array into float32 ``1 - pixel/255`` of shape (N, H, W, C) at the
model's size, C = 1 (gray) or 3 (RGB, in R, G, B order, each channel ``1 - value/255``): the background is 0
either way, so shifted or warped-in pixels are background for both kinds of model.

- pixel scale: uint8, bool and other integer arrays are pixels 0..255; uint16 is 16-bit data
  (0..65535, divided by 257); float arrays are pixels 0..255, or [0, 1] (1 = paper) when no value
  exceeds 1.0. Values outside the range (beyond half a gray level) are refused, not clipped.
- channels: gray, RGB or RGBA, whose alpha is composited onto the background (white, ``BACKGROUND``):
  transparent pixels are background, whatever their color. A gray model takes the luma
  (0.299/0.587/0.114) of colour images; an RGB model repeats a gray image on its three channels.
- resize: area resampling. Images larger than ``TILE`` pixels on a side are resampled tile by tile,
  so the extra memory stays a few MiB whatever the image size.
"""

from __future__ import annotations

import functools

import numpy as np

PAPER = 255.0
BACKGROUND = (255, 255, 255)  # what alpha is composited onto: white, the paper of gray images
CHANNELS = (1, 3)  # model inputs: gray or RGB
TILE = 1024  # sides up to this are resampled in one piece (bit-identical to the plain formula)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_SLACK = 0.5  # half a gray level of tolerance on the pixel range


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


def _area_columns(n_in: int, n_out: int, j0: int, j1: int) -> np.ndarray:
    """Columns j0..j1 of the area matrix (n_out, j1 - j0), computed directly (for inputs too big to cache)."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    j = np.arange(j0, j1, dtype=np.float64)
    overlap = np.minimum(edges[1:, None], j[None] + 1) - np.maximum(edges[:-1, None], j[None])
    return (np.maximum(overlap, 0.0) / np.diff(edges)[:, None]).astype(np.float32)


def resize_area(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resample float images (N, H, W) or (H, W) to ``size`` = (h, w); returns float32."""
    images = np.asarray(images)
    h, w = size
    if images.shape[-2:] == (h, w):
        return images.astype(np.float32, copy=False)
    if max(images.shape[-2:]) > TILE:
        flat = images.reshape(-1, *images.shape[-2:])
        out = np.stack([_resize_tiled(img, size, lambda t: t.astype(np.float32)) for img in flat])
        return out.reshape(*images.shape[:-2], h, w)
    images = images.astype(np.float32, copy=False)
    rh = _area_matrix(images.shape[-2], h)
    rw = _area_matrix(images.shape[-1], w)
    return np.einsum("ij,...jk,lk->...il", rh, images, rw, optimize=True).astype(np.float32)


def _resize_tiled(
    img: np.ndarray, size: tuple[int, int], to_pixels_fn, channels: int = 0
) -> np.ndarray:
    """Area-resample one image (H, W[, C]) tile by tile; ``to_pixels_fn`` maps a tile to float32 pixels
    (rows, cols), or (rows, cols, channels) when ``channels`` > 0 (then the result is (h, w, channels))."""
    n_h, n_w = img.shape[:2]
    out = np.zeros(size + ((channels,) if channels else ()), np.float64)
    for r0 in range(0, n_h, TILE):
        rh = _area_columns(n_h, size[0], r0, min(n_h, r0 + TILE))
        for c0 in range(0, n_w, TILE):
            rw = _area_columns(n_w, size[1], c0, min(n_w, c0 + TILE))
            tile = to_pixels_fn(img[r0 : r0 + TILE, c0 : c0 + TILE])
            if channels:
                for c in range(channels):
                    out[..., c] += rh @ tile[..., c] @ rw.T
            else:
                out += rh @ tile @ rw.T
    return out.astype(np.float32)


def to_gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, C]) with C in {1, 3, 4} in pixel units -> (N, H, W) float32; alpha composited onto paper."""
    x = np.asarray(images)
    if x.ndim == 3:
        return x.astype(np.float32)
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {x.shape}")
    c = x.shape[-1]
    if c == 1:
        return x[..., 0].astype(np.float32)
    if c in (3, 4):
        gray = x[..., :3].astype(np.float32) @ _LUMA
        if c == 4:
            alpha = np.clip(x[..., 3].astype(np.float32) / np.float32(PAPER), 0.0, 1.0)
            gray = gray * alpha + np.float32(PAPER) * (1.0 - alpha)
        return gray
    raise ValueError(f"images have {c} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)")


def to_rgb(images: np.ndarray, background=BACKGROUND) -> np.ndarray:
    """(N, H, W[, C]) with C in {1, 3, 4} in pixel units -> (N, H, W, 3) float32; alpha composited onto
    ``background`` (an (r, g, b) in 0..255), gray repeated on the three channels."""
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {x.shape}")
    c = x.shape[-1]
    if c == 1:
        return np.repeat(x.astype(np.float32), 3, axis=-1)
    if c == 3:
        return x.astype(np.float32)
    if c == 4:
        alpha = np.clip(x[..., 3:].astype(np.float32) / np.float32(PAPER), 0.0, 1.0)
        bg = np.asarray(background, np.float32)
        return x[..., :3].astype(np.float32) * alpha + bg * (1.0 - alpha)
    raise ValueError(f"images have {c} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)")


def pixel_scale(x: np.ndarray) -> float:
    """The factor taking ``x`` to pixel units 0..255 (module docstring); ValueError if out of range or NaN."""
    if x.dtype.kind == "b" or x.dtype == np.uint8 or x.size == 0:
        return 1.0
    if x.dtype.kind not in "iuf":
        raise ValueError(f"unsupported dtype {x.dtype}; pass uint8 or uint16 pixels, or floats")
    lo, hi = np.min(x), np.max(x)
    if x.dtype.kind == "f":
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError("images contain NaN or infinite values")
        scale = PAPER if hi <= 1.0 else 1.0
        if lo * scale < -_SLACK or hi * scale > PAPER + _SLACK:
            raise ValueError(
                f"float pixel values span [{float(lo):.4g}, {float(hi):.4g}]; expected [0, 1] "
                "(1 = paper) or [0, 255]"
            )
        return scale
    if x.dtype == np.uint16:
        return 1.0 / 257.0
    if lo < 0 or hi > 255:
        raise ValueError(
            f"{x.dtype} pixel values span [{int(lo)}, {int(hi)}]; expected 0..255 "
            "(use uint16 for 16-bit data)"
        )
    return 1.0


def _tile_converter(scale: float, channels: int, background):
    def convert(tile: np.ndarray) -> np.ndarray:
        t = tile.astype(np.float32) if tile.dtype.kind == "b" else tile
        if scale != 1.0:
            t = t.astype(np.float32) * np.float32(scale)
        return to_gray(t[None])[0] if channels == 1 else to_rgb(t[None], background)[0]

    return convert


def _resize_rgb(x: np.ndarray, size: tuple[int, int], background) -> np.ndarray:
    """(N, H, W[, C]) pixels -> (N, h, w, 3) float32 pixels, channel by channel."""
    rgb = np.moveaxis(
        to_rgb(x, background), -1, 1
    )  # (N, 3, H, W): resize_area works on the last two axes
    return np.ascontiguousarray(np.moveaxis(resize_area(rgb, size), 1, -1))


@functools.lru_cache(maxsize=2)
def _gray_uint8_table(invert: bool) -> np.ndarray:
    """float32 (256,): the model input of each uint8 gray pixel value, computed by the general steps."""
    return _convert(
        np.arange(256, dtype=np.uint8).reshape(1, 16, 16), (16, 16), invert, 1, BACKGROUND
    ).ravel()


def to_model_input(
    images: np.ndarray,
    size: tuple[int, int],
    invert: bool = True,
    channels: int = 1,
    background=BACKGROUND,
) -> np.ndarray:
    """Image arrays (N, H, W[, C]) -> float32 (N, h, w, ``channels``) in [0, 1], ink = 1 when ``invert``.

    Pixel scale and channels as in the module docstring; raises ValueError for values out of range.
    """
    if channels not in CHANNELS:
        raise ValueError(f"a model takes 1 (gray) or 3 (RGB) channels, not {channels}")
    x = np.asarray(images)
    if (
        channels == 1
        and x.dtype == np.uint8
        and x.shape[1:3] == tuple(size)
        and (x.ndim == 3 or (x.ndim == 4 and x.shape[3] == 1))
    ):
        # gray pixels already at the model's size: every step is per pixel, so a 256-entry table gives the
        # same floats as the steps below (at batch 1 their ten numpy calls cost as much as quantizing)
        return _gray_uint8_table(bool(invert))[x.reshape(x.shape[:3])][..., None]
    return _convert(x, size, invert, channels, background)


def _convert(
    x: np.ndarray, size: tuple[int, int], invert: bool, channels: int, background
) -> np.ndarray:
    """``to_model_input`` step by step: pixel scale, channels, area resize, clip, invert."""
    if x.dtype.kind == "b":
        x = x.astype(np.uint8) * np.uint8(255)
    scale = pixel_scale(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {x.shape}")
    if x.ndim == 4 and x.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"images have {x.shape[-1]} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA)"
        )
    if max(x.shape[1:3]) > TILE:
        convert = _tile_converter(scale, channels, background)
        out = (
            np.stack(
                [_resize_tiled(img, size, convert, 0 if channels == 1 else channels) for img in x]
            )
            / 255.0
        )
    else:
        if x.dtype.kind == "f" and scale != 1.0:
            x = x * 255.0
        elif scale != 1.0:
            x = x.astype(np.float32) * np.float32(scale)
        out = (
            resize_area(to_gray(x), size) if channels == 1 else _resize_rgb(x, size, background)
        ) / 255.0
    out = out.astype(np.float32, copy=False)
    np.maximum(
        out, np.float32(0.0), out=out
    )  # clipped in place (ufuncs: np.clip's dispatch costs more at batch 1)
    np.minimum(out, np.float32(1.0), out=out)
    if invert:
        np.subtract(np.float32(1.0), out, out=out)
    return out[..., None] if channels == 1 else out


def to_pixels(x: np.ndarray, invert: bool = True, value_range=(0.0, 1.0)) -> np.ndarray:
    """Model input (N, h, w, C) -> uint8 pixels, 255 = paper: the inverse of ``to_model_input``; gray (N, h, w)
    for C = 1, RGB (N, h, w, 3) for C = 3.

    Kept images go through ``to_model_input`` again (with any bundle's settings) and give back the same
    int8 input up to rounding, so a state can be re-embedded by another backbone.
    """
    lo, hi = (float(v) for v in value_range)
    x01 = np.asarray(x, np.float32)
    x01 = x01[..., 0] if x01.shape[-1] == 1 else x01
    if (lo, hi) != (0.0, 1.0):
        x01 = (x01 - np.float32(lo)) / np.float32(hi - lo)
    gray = 1.0 - x01 if invert else x01
    return np.clip(np.rint(gray * np.float32(255.0)), 0, 255).astype(np.uint8)


# What ``to_model_input`` does, as recorded in a model's config.json and a bundle's manifest ("preprocess"):
# gray (color "L"), or RGB in that order with alpha composited onto "background".
SETTINGS = {"color": "L", "resize": "area", "invert": True, "range": [0.0, 1.0]}
RGB_SETTINGS = {
    "color": "RGB",
    "resize": "area",
    "invert": True,
    "range": [0.0, 1.0],
    "background": list(BACKGROUND),
}
COLOR_CHANNELS = {"L": 1, "RGB": 3}


def settings(channels: int = 1) -> dict:
    """A fresh copy of ``SETTINGS`` (1 channel) or ``RGB_SETTINGS`` (3): callers may change theirs."""
    if channels not in CHANNELS:
        raise ValueError(f"a model takes 1 (gray) or 3 (RGB) channels, not {channels}")
    chosen = SETTINGS if channels == 1 else RGB_SETTINGS
    return {k: list(v) if isinstance(v, list) else v for k, v in chosen.items()}
