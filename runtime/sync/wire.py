"""The image wire format between devices and the fleet server, encoded and decoded in one place.

An image travels as ``{"height": H, "width": W, "channels": 1 | 3, "pixels": base64}``: uint8 pixels row by
row (R, G, B per pixel for 3 channels; 255 = paper), ``channels`` 1 when absent. Uploaded examples and the
class library's images use it both ways. ``decode_image`` is the one check of it, on the server and the
device: sizes and channels must be genuine integers (``True`` is not 1), the pixels real base64 of exactly
height * width * channels bytes.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from metalite.common.errors import MetaliteError

MAX_SIDE = 512  # pixels on a side of one image on the wire
CHANNELS = (1, 3)  # gray, RGB


class WireError(MetaliteError, ValueError):
    """An image on the wire is malformed; the message names the field."""


def encode_image(img: np.ndarray) -> dict:
    """uint8 (H, W) gray or (H, W, 3) RGB -> the wire format."""
    img = np.ascontiguousarray(img, np.uint8)
    return {
        "height": int(img.shape[0]),
        "width": int(img.shape[1]),
        "channels": 1 if img.ndim == 2 else 3,
        "pixels": base64.b64encode(img.tobytes()).decode("ascii"),
    }


def decode_image(d, max_side: int = MAX_SIDE) -> np.ndarray:
    """The wire format -> uint8 (H, W) or (H, W, 3); ``WireError`` naming the field if anything is off."""
    if not isinstance(d, dict):
        raise WireError("not an object")
    h, w, c = d.get("height"), d.get("width"), d.get("channels", 1)
    if not all(type(v) is int and 1 <= v <= max_side for v in (h, w)):
        raise WireError(f"height and width must be integers in 1..{max_side}")
    if type(c) is not int or c not in CHANNELS:
        raise WireError(f"channels must be 1 (gray) or 3 (RGB), got {str(c)[:20]}")
    if not isinstance(d.get("pixels"), str):
        raise WireError("pixels must be a base64 string")
    try:
        px = base64.b64decode(d["pixels"], validate=True)
    except (binascii.Error, ValueError):
        raise WireError("pixels must be base64") from None
    if len(px) != h * w * c:
        raise WireError(
            f"pixels hold {len(px)} bytes, expected height*width*channels = {h * w * c}"
        )
    px = np.frombuffer(px, np.uint8)
    return px.reshape(h, w) if c == 1 else px.reshape(h, w, 3)
