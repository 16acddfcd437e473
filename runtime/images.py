"""Whatever the user passes as images → float32 model input (N, H, W, C), via ``preprocess.to_model_input``.

Accepted: a file path (str or Path) or a list of them (decoded with Pillow, imported only then); one
numpy image (H, W) or (H, W, C) with C in {1, 3, 4}; a batch (N, H, W) or (N, H, W, C); or a list mixing
paths and single images of any sizes. An array (H, W, C) whose last axis is 1–4 is one image with C
channels; with a larger last axis it is a batch (N, H, W) of gray images, except for an RGB model, which
refuses a bare (3, H, W) or (4, H, W) array in one line: it is most likely one channel-first image, and
reading it as three gray images would be silently wrong. Pixel scales (uint8, uint16, float [0, 1] or
[0, 255]) and alpha compositing are ``metalite.runtime.preprocess``'s. Files keep their transparency
whether it is an alpha channel, a palette entry or a colour key (a PNG ``tRNS`` chunk on an RGB or gray
image): all of them are composited onto the background, so a transparent black key colour is not ink.

Decoding is bounded: a file whose decoded size exceeds ``max_image_pixels()`` (``MAX_IMAGE_PIXELS``
= 4096 × 4096, or ``$METALITE_MAX_IMAGE_PIXELS``) is refused in one line from its header, before any
pixel is decoded; JPEGs are decoded at a reduced DCT scale (down to ``DRAFT_FACTOR`` times the model's
input size) first, so large photos stay cheap. Decoding peaks at two copies of the image (Pillow's and
numpy's: 4 bytes per pixel each for color, 1 for gray, 2 or 4 for 16-bit), plus a conversion copy for
palette/CMYK/alpha modes; resizing then adds a few MiB (``preprocess`` works tile by tile).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from metalite.common.errors import one_line

from .errors import InputError, MissingExtraError
from .preprocess import BACKGROUND, to_model_input

IMAGE_EXTENSIONS = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
    ".pnm",
)
MAX_IMAGE_PIXELS = 4096 * 4096
DRAFT_FACTOR = 4
_CHANNELS = (1, 3, 4)
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_COLOR_MODES = ("RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
_KEYED_MODES = (
    "P",
    "L",
    "RGB",
    "1",
)  # modes whose transparency Pillow keeps in info["transparency"]


def max_image_pixels() -> int:
    """The decoding budget in pixels: ``$METALITE_MAX_IMAGE_PIXELS`` if set to a positive int, else ``MAX_IMAGE_PIXELS``."""
    raw = os.environ.get("METALITE_MAX_IMAGE_PIXELS", "")
    try:
        value = int(raw)
    except ValueError:
        return MAX_IMAGE_PIXELS
    return value if value > 0 else MAX_IMAGE_PIXELS


def _as_array(im, dtype=None) -> np.ndarray:
    """The decoded image as a numpy array, copied band by band (``np.asarray`` on the whole image would
    hold two more full copies while Pillow serialises it)."""
    w, h = im.size
    rows = max(1, (1 << 20) // max(1, w))
    out = None
    for y in range(0, h, rows):
        band = np.asarray(im.crop((0, y, w, min(h, y + rows))), dtype=dtype)
        if out is None:
            out = np.empty((h, *band.shape[1:]), band.dtype)
        out[y : y + len(band)] = band
    return out if out is not None else np.asarray(im, dtype=dtype)


def _decode(im, p, min_size) -> np.ndarray:
    if min_size is not None and im.format == "JPEG":
        im.draft(
            None, (int(min_size[1]), int(min_size[0]))
        )  # DCT-domain downscale, never below min_size
    w, h = im.size
    budget = max_image_pixels()
    if w * h > budget:
        raise InputError(
            f"{p}: {w}x{h} image ({w * h:,} pixels) exceeds the decoding budget of {budget:,} pixels "
            "(set METALITE_MAX_IMAGE_PIXELS to raise it)"
        )
    im.load()
    mode = im.mode
    if mode.startswith("I;16"):
        return _as_array(im).astype(np.uint16)  # 16-bit gray, native byte order
    if mode in ("I", "F"):
        a = _as_array(im)
        if mode == "F":
            return a.astype(np.float32)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise InputError(f"{p}: 32-bit integer image with values outside 0..65535")
        return a.astype(np.uint16)
    if mode in _ALPHA_MODES or (mode in _KEYED_MODES and im.info.get("transparency") is not None):
        target = "RGBA"  # a palette entry or colour key (tRNS) that is transparent becomes alpha 0
    else:
        target = "RGB" if mode in _COLOR_MODES else "L"
    if mode != target:  # convert() to the same mode would still copy the whole image
        im = im.convert(target)
    return _as_array(im, np.uint8)


def read_image(path, min_size=None) -> np.ndarray:
    """Decode an image file with Pillow, within the pixel budget.

    Args:
      path: str or Path.
      min_size: (h, w) the image will be resized to, or None; JPEGs are then decoded at the smallest DCT
        scale that keeps at least this size.
    Returns:
      uint8 (H, W) for gray/bilevel/palette images, (H, W, 3|4) for color/alpha; uint16 (H, W) for
      16-bit gray; float32 (H, W) for floating-point images.
    Raises:
      MissingExtraError: Pillow missing. InputError: file missing, above the pixel budget, or not decodable.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {'not a regular file' if p.exists() else 'no such image file'}")
    return _open_decode(p, p, min_size)


def read_image_bytes(data: bytes, name: str = "uploaded image", min_size=None) -> np.ndarray:
    """``read_image`` for an encoded image already in memory (an upload); ``name`` is used in messages."""
    return _open_decode(io.BytesIO(data), name, min_size)


def _open_decode(source, name, min_size) -> np.ndarray:
    """Open ``source`` (a path or a binary file object) with Pillow and decode it within the budget."""
    try:
        from PIL import Image
    except ImportError:
        raise MissingExtraError("pillow", "images") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # DecompressionBombWarning and friends: we apply our own budget
            with Image.open(source) as im:
                return _decode(im, name, min_size)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(
            f"{name}: image exceeds the decoding budget of {max_image_pixels():,} pixels "
            "(set METALITE_MAX_IMAGE_PIXELS to raise it)"
        ) from None
    except Exception as e:
        raise InputError(f"{name}: cannot decode image ({one_line(e)[:200]})") from None


def is_path(x) -> bool:
    """True for a str or os.PathLike (an image file), False for arrays and lists."""
    return isinstance(x, (str, os.PathLike))


def _check_array(a: np.ndarray, what: str) -> np.ndarray:
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise InputError(
            f"{what}: unsupported dtype {a.dtype}; pass uint8 or uint16 pixels, or floats"
        )
    return a


def _single(a: np.ndarray, what: str) -> np.ndarray:
    """One image (H, W) or (H, W, C) -> batch of one (1, H, W[, C])."""
    if a.ndim == 2:
        return a[None]
    if a.ndim == 3 and a.shape[-1] in _CHANNELS:
        return a[None]
    if a.ndim == 3 and a.shape[-1] <= 4:
        raise InputError(
            f"{what} has {a.shape[-1]} channels (shape {a.shape}); expected 1 (gray), 3 (RGB) or 4 (RGBA)"
        )
    raise InputError(f"{what} has shape {a.shape}; expected (H, W) or (H, W, C)")


def _to_input(batch: np.ndarray, size, pre: dict, what: str) -> np.ndarray:
    if min(batch.shape[1:3]) < 1:
        raise InputError(f"{what} is empty (shape {batch.shape})")
    invert, (lo, hi), channels, background = (
        pre["invert"],
        pre["range"],
        pre["channels"],
        pre["background"],
    )
    try:
        x = to_model_input(batch, size, invert=invert, channels=channels, background=background)
    except (ValueError, MemoryError) as e:
        raise InputError(f"{what}: {str(e)[:200] or type(e).__name__}") from None
    if (lo, hi) != (0.0, 1.0):
        x = (np.float32(lo) + np.float32(hi - lo) * x).astype(np.float32)
    return x


def as_model_input(images, input_shape, preprocess: dict | None = None) -> np.ndarray:
    """Turn user images into model input.

    Args:
      images: see the module docstring.
      input_shape: (H, W, C) of the model, C = 1 (gray) or 3 (RGB).
      preprocess: the bundle's ``input.preprocess`` (``invert``, ``range``, ``background``); None for the defaults.
    Returns:
      float32 (N, H, W, C), N >= 1.
    Raises:
      InputError: no images, wrong shape or channel count, a bare channel-first array for an RGB model,
        NaN/inf or out-of-range values, unreadable file or one above the pixel budget, unsupported dtype.
    """
    pre = preprocess or {}
    channels = int(input_shape[2]) if len(input_shape) > 2 else 1
    settings = {
        "invert": bool(pre.get("invert", True)),
        "range": tuple(float(v) for v in pre.get("range", (0.0, 1.0))),
        "channels": channels,
        "background": tuple(pre.get("background", BACKGROUND)),
    }
    size = (int(input_shape[0]), int(input_shape[1]))
    draft = (DRAFT_FACTOR * size[0], DRAFT_FACTOR * size[1])

    if is_path(images):
        images = [images]
    if isinstance(images, np.ndarray):
        a = _check_array(images, "image array")
        if a.ndim == 4:
            if a.shape[-1] not in _CHANNELS:
                raise InputError(
                    f"image batch has {a.shape[-1]} channels (shape {a.shape}); expected 1, 3 or 4"
                )
            batch = a
        elif a.ndim == 3 and a.shape[-1] > 4:
            if channels == 3 and a.shape[0] in _CHANNELS[1:]:
                raise InputError(
                    f"image array of shape {a.shape} looks channel-first; this RGB model takes (H, W, 3) "
                    "(np.moveaxis(a, 0, -1)), or pass gray images as a list"
                )
            batch = a
        else:
            batch = _single(a, "image")
        if len(batch) == 0:
            raise InputError("no images given (empty array)")
        return _to_input(batch, size, settings, "image array")
    if not isinstance(images, (list, tuple)):
        raise InputError(
            f"images must be a path, a numpy array or a list of them, got {type(images).__name__}"
        )
    if len(images) == 0:
        raise InputError("no images given (empty list)")
    parts = []
    for i, item in enumerate(images):
        if is_path(item):
            what = str(item)
            a = _check_array(read_image(item, draft), what)
        else:
            what = f"image {i}"
            try:
                a = np.asarray(item)
            except Exception as e:
                raise InputError(f"{what}: not an image ({one_line(e)[:200]})") from None
            a = _check_array(a, what)
        parts.append(_to_input(_single(a, what), size, settings, what))
    return np.concatenate(parts).astype(np.float32)
