"""Augmentation inside the episode sampler: small random distortions of each drawing.

A few-shot learner sees each training character only through its 20 drawings; random affine warps and
stroke-width changes make every episode's images new (Koch et al. 2015 and Lake et al. 2015 distort
Omniglot the same way). Works on model input (N, H, W, C) float32, ink = 1 and paper = 0, so pixels
warped in from outside the image are paper. ``Augment(**strengths)(rng, x)`` returns new arrays.

Colour images (C = 3) may also change colour: ``hue`` (rotation of the chroma about the gray axis, in
degrees), ``saturation`` and ``brightness`` (relative changes) and ``background`` (the white background
tinted towards a random colour by up to this fraction; background is what is near-white). Colour changes
come first, in pixel space, then the affine warp, so warped-in pixels are still the (untinted) paper.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

NONE = {
    "shift": 0.0,
    "rotate": 0.0,
    "scale": 0.0,
    "shear": 0.0,
    "stroke": 0.0,
    "hue": 0.0,
    "saturation": 0.0,
    "brightness": 0.0,
    "background": 0.0,
}
COLOR_KEYS = ("hue", "saturation", "brightness", "background")
_BG_CUT = (
    0.08  # model-input level (0 = white) below which a pixel counts as background, fading out above
)
# metalite train's default: measured on held-out Omniglot alphabets (docs/accuracy.md)
DEFAULT = {"shift": 2.0, "rotate": 10.0, "scale": 0.1, "shear": 0.2, "stroke": 0.5}


@dataclass(frozen=True)
class Augment:
    """Strengths: ``shift`` (max pixels), ``rotate`` (max degrees), ``scale`` (max relative change),
    ``shear`` (max shear factor), ``stroke`` (max stroke-width change, 0..1 of a 3x3 dilation/erosion).
    Each image draws its own values uniformly in [-max, max]; colour strengths (module docstring) act on RGB
    input only."""

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    shear: float = 0.0
    stroke: float = 0.0
    hue: float = 0.0
    saturation: float = 0.0
    brightness: float = 0.0
    background: float = 0.0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"augmentation {k} must be a finite number >= 0, got {v!r}")

    @property
    def active(self) -> bool:
        return any(v > 0 for v in asdict(self).values())

    def __call__(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        if not self.active or len(x) == 0:
            return x
        if x.shape[-1] == 3 and any(getattr(self, k) for k in COLOR_KEYS):
            x = self._color(rng, x)
        if self.shift or self.rotate or self.scale or self.shear:
            x = warp_affine(x, self._matrices(rng, len(x), x.shape[1:3]))
        if self.stroke:
            x = stroke_width(x, rng.uniform(-self.stroke, self.stroke, len(x)))
        return x

    def _color(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        """Hue, saturation, brightness and background changes of RGB model input (ink = 1 - pixel)."""
        n = len(x)
        rgb = 1.0 - x
        if self.background:  # tint what is near-white towards a random colour
            weight = np.clip(1.0 - x.max(axis=-1, keepdims=True) / _BG_CUT, 0.0, 1.0)
            tint = rng.uniform(0, self.background, (n, 1, 1, 1)) * (rng.random((n, 1, 1, 3)) - 1.0)
            rgb = rgb + weight * tint
        gray = (rgb @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        if self.saturation:
            rgb = gray + (rgb - gray) * (
                1.0 + rng.uniform(-self.saturation, self.saturation, (n, 1, 1, 1))
            )
        if self.hue:
            rgb = gray + np.einsum(
                "nhwc,ndc->nhwd", rgb - gray, _hue_rotations(rng.uniform(-self.hue, self.hue, n))
            )
        if self.brightness:
            rgb = rgb * (1.0 + rng.uniform(-self.brightness, self.brightness, (n, 1, 1, 1)))
        return (1.0 - np.clip(rgb, 0.0, 1.0)).astype(np.float32)

    def _matrices(self, rng, n: int, hw) -> np.ndarray:
        """(n, 2, 3) maps from output (row, col) to input (row, col), about the image centre."""
        u = lambda m: rng.uniform(-m, m, n)  # noqa: E731
        theta, s, sh = np.deg2rad(u(self.rotate)), 1.0 + u(self.scale), u(self.shear)
        ty, tx = u(self.shift), u(self.shift)
        cos, sin = np.cos(theta), np.sin(theta)
        # forward map A = R(theta) @ Shear(sh) * s; sample the input at A^-1 (out - c - t) + c
        a = (
            np.stack(
                [np.stack([cos, -sin + cos * sh], -1), np.stack([sin, cos + sin * sh], -1)], -2
            )
            * s[:, None, None]
        )
        inv = np.linalg.inv(a)
        c = (np.array(hw, np.float64) - 1) / 2
        offset = c - np.einsum("nij,nj->ni", inv, c + np.stack([ty, tx], -1))
        return np.concatenate([inv, offset[:, :, None]], axis=2)


def _hue_rotations(degrees: np.ndarray) -> np.ndarray:
    """(n, 3, 3) rotations of RGB about the gray axis (1, 1, 1) by ``degrees``: a hue shift keeping luma close."""
    t = np.deg2rad(np.asarray(degrees, np.float64))
    k = np.ones(3) / np.sqrt(3.0)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    outer = np.outer(k, k)
    c, s = np.cos(t)[:, None, None], np.sin(t)[:, None, None]
    return (c * np.eye(3) + s * cross + (1 - c) * outer).astype(np.float32)


def warp_affine(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Bilinear warp of (N, H, W, C) images by (N, 2, 3) output->input maps; outside pixels are 0."""
    n, h, w, c = x.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    grid = np.stack([rows.ravel(), cols.ravel(), np.ones(h * w)], 0)  # (3, HW)
    src = m @ grid  # (N, 2, HW)
    r0, c0 = np.floor(src[:, 0]).astype(np.int64), np.floor(src[:, 1]).astype(np.int64)
    fr, fc = (src[:, 0] - r0)[..., None], (src[:, 1] - c0)[..., None]
    padded = np.pad(
        x, ((0, 0), (1, 1), (1, 1), (0, 0))
    )  # a zero border: out-of-range taps read paper
    flat = padded.reshape(n, -1, c)
    out = np.zeros((n, h * w, c), np.float32)
    for dr, dc, wgt in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        rr = np.clip(r0 + dr + 1, 0, h + 1)
        cc = np.clip(c0 + dc + 1, 0, w + 1)
        idx = rr * (w + 2) + cc
        out += wgt * np.take_along_axis(flat, idx[..., None], axis=1)
    return out.reshape(n, h, w, c)


def stroke_width(x: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Thicken (amount > 0) or thin (< 0) strokes: blend each image with its 3x3 max (min) filter."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    taps = [p[:, i : i + h, j : j + w] for i in range(3) for j in range(3)]
    grow, shrink = np.max(taps, axis=0), np.min(taps, axis=0)
    a = np.asarray(amount, np.float32)[:, None, None, None]
    return np.where(a >= 0, (1 - a) * x + a * grow, (1 + a) * x - a * shrink).astype(np.float32)
