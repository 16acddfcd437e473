"""The health check before a switch: leave-one-out accuracy of the head on the device's own support set.

For every support image of a class with at least two images, the head is adapted on all the others
and must classify the held-out one. With only one image per class there is nothing to hold out; the
check then asks the head adapted on the whole set to classify that set. Above ``max_queries`` images
an evenly spread subset is held out, so the check stays bounded on large support sets.
"""

from __future__ import annotations

import numpy as np

from .. import head as headlib


def support_accuracy(spec: headlib.HeadSpec, support: dict, max_queries: int = 200) -> tuple:
    """Accuracy of ``spec`` adapted on ``support``.

    Args:
      spec: the bundle's head.
      support: ``{label: float32 (k, D) embeddings}``.
      max_queries: most held-out images.
    Returns:
      (accuracy in [0, 1], method ``"leave-one-out"`` or ``"resubstitution"``, images checked).
    """
    classes = list(support)
    emb = np.concatenate([support[c] for c in classes]).astype(np.float32)
    y = np.concatenate([np.full(len(support[c]), i, np.int64) for i, c in enumerate(classes)])
    counts = np.bincount(y, minlength=len(classes))
    held = np.flatnonzero(counts[y] >= 2)
    if held.size == 0:
        head = headlib.adapt(spec, emb, y, len(classes))
        return float(np.mean(head.logits(emb).argmax(axis=1) == y)), "resubstitution", len(y)
    if held.size > max_queries:
        held = held[np.linspace(0, held.size - 1, max_queries).astype(int)]
    right = 0
    for i in held:
        keep = np.arange(len(y)) != i
        head = headlib.adapt(spec, emb[keep], y[keep], len(classes))
        right += int(head.logits(emb[i : i + 1]).argmax() == y[i])
    return right / held.size, "leave-one-out", int(held.size)
