"""Cross-drawer one-shot episodes and the simple baselines measured on them (numpy only).

An N-way 1-shot episode takes N classes drawn by both of two drawers (for emoji: two artists), the
support image from one and the query from the other, so nothing but the concept is shared. Every method
answers the same episodes (``episodes``), which makes the comparison paired:

- ``pixel_features``: raw pixels (RGB for colour data) at 28 px, nearest neighbour by L2;
- ``histogram_features``: a joint colour histogram of the non-background pixels, nearest neighbour by L1;
- a bundle, through ``FewShotClassifier`` (``scripts/emoji_eval.py``).
"""

from __future__ import annotations

import numpy as np

from metalite.runtime.preprocess import resize_area

from .datasets import FewShotData
from .errors import DataError
from .evaluate import mean_ci95

HIST_BINS = 8  # per channel: 8 x 8 x 8 joint bins
BACKGROUND_LEVEL = (
    240  # a pixel with every channel above this is background, left out of the histogram
)


def episodes(data: FewShotData, ways: int, n: int, seed: int = 0, drawers=None) -> list:
    """``n`` episodes [(support indices (ways,), query indices (ways,))]: query j shows support j's class,
    drawn by another drawer (of ``drawers`` when given; every ordered pair of them equally likely). DataError
    if no pair of drawers shares ``ways`` classes."""
    by = {}
    for i, (c, d) in enumerate(zip(data.labels, data.drawers)):
        if drawers is None or int(d) in drawers:
            by.setdefault((int(c), int(d)), []).append(i)
    drawers = sorted({d for _, d in by})
    pairs = {}
    for a in drawers:
        for b in drawers:
            if a != b:
                shared = sorted(c for c, d in by if d == a and (c, b) in by)
                if len(shared) >= ways:
                    pairs[(a, b)] = np.array(shared)
    if not pairs:
        raise DataError(
            f"{data.spec or 'data'}: no two drawers share {ways} classes for cross-drawer episodes"
        )
    rng = np.random.default_rng(seed)
    keys = sorted(pairs)
    out = []
    for _ in range(n):
        a, b = keys[rng.integers(len(keys))]
        classes = rng.choice(pairs[(a, b)], ways, replace=False)
        s = [by[(int(c), a)][rng.integers(len(by[(int(c), a)]))] for c in classes]
        q = [by[(int(c), b)][rng.integers(len(by[(int(c), b)]))] for c in classes]
        out.append((np.array(s), np.array(q)))
    return out


def pixel_features(data: FewShotData, size: int = 28) -> np.ndarray:
    """(N, size*size*C) float32 pixels in [0, 1] at ``size`` px (area resampled)."""
    x = data.images.astype(np.float32)
    x = (
        resize_area(x, (size, size))
        if x.ndim == 3
        else np.moveaxis(resize_area(np.moveaxis(x, -1, 1), (size, size)), 1, -1)
    )
    return (x / 255.0).reshape(len(x), -1)


def histogram_features(data: FewShotData, bins: int = HIST_BINS) -> np.ndarray:
    """(N, bins**3) joint RGB histograms of the non-background pixels, each summing to 1 (gray: bins**1)."""
    x = data.images if data.images.ndim == 4 else data.images[..., None]
    q = (x.astype(np.int32) * bins) // 256
    code = q[..., 0]
    for c in range(1, x.shape[-1]):
        code = code * bins + q[..., c]
    fg = ~np.all(x > BACKGROUND_LEVEL, axis=-1)
    out = np.zeros((len(x), bins ** x.shape[-1]), np.float32)
    for i in range(len(x)):
        out[i] = np.bincount(code[i][fg[i]], minlength=out.shape[1])
    return out / np.maximum(out.sum(1, keepdims=True), 1.0)


def nearest_neighbour(features: np.ndarray, metric: str = "l2"):
    """classify(support, query) -> predicted support position per query, by the nearest support feature."""

    def classify(s_idx, q_idx):
        s, q = features[s_idx], features[q_idx]
        if metric == "l1":
            d = np.abs(q[:, None, :] - s[None, :, :]).sum(-1)
        else:
            d = (q**2).sum(1)[:, None] - 2 * q @ s.T + (s**2).sum(1)[None]
        return d.argmin(1)

    return classify


def score(classify, data: FewShotData, eps: list) -> dict:
    """Accuracy of ``classify`` over ``eps``: mean and 95% CI over episodes, and per category of the query
    (the group of its class) the mean with its number of queries, and per (support -> query) drawer pair."""
    accs, per, pairs = [], {}, {}
    for s_idx, q_idx in eps:
        right = np.asarray(classify(s_idx, q_idx)) == np.arange(len(q_idx))
        accs.append(float(right.mean()))
        pairs.setdefault(
            f"{int(data.drawers[s_idx[0]])}->{int(data.drawers[q_idx[0]])}", []
        ).append(accs[-1])
        for qi, ok in zip(q_idx, right):
            g = data.groups[int(data.labels[qi])]
            per.setdefault(g, []).append(bool(ok))
    mean, ci = mean_ci95(accs)
    return {
        "mean": mean,
        "ci95": ci,
        "episodes": len(eps),
        "per_category": {
            g: {"mean": float(np.mean(v)), "queries": len(v)} for g, v in sorted(per.items())
        },
        "per_drawer_pair": {
            k: {"mean": float(np.mean(v)), "episodes": len(v)} for k, v in sorted(pairs.items())
        },
    }
