"""Open-set answers ("none of these"): a rejection threshold the device calibrates from its support set alone.

Score of a query: squared Euclidean distance from its head output (the adapted hidden layers) to the
nearest class prototype (mean head output of that class's support images), the quantity ProtoNet logits
are made of. A query farther than ``threshold`` is answered ``UNKNOWN``. How the threshold is set
(docs/open_set.md has the measurements behind each constant):

- ``leave-one-out`` (some class has 2+ images): each support image's distance to the mean of the other
  images of its class, times ``(n+1)(n-1)/n^2`` (a query's expected distance to an n-image prototype over
  a held-out image's to an (n-1)-image one); their logs are taken as normal, the spread shrunk towards
  ``LOG_SPREAD_PRIOR`` when there are few, and the threshold is the ``1 - rate`` quantile of the
  predictive distribution (widened by ``sqrt(1 + 2/m)`` for m distinct distances).
- ``nearest-class`` (one image per class, 2+ classes): nothing to hold out, so the threshold is a fixed
  multiple of the median distance between each prototype and its nearest other one, the multiple from the
  ratio measured on held-out Omniglot (``ONE_SHOT_RATIO``): the rate is then a target, not calibrated.
- ``none`` (one class, one image): nothing to measure; no query is refused.

Pure numpy (and ``statistics.NormalDist``); the device and ``metalite evaluate --open-set`` compute the same.
"""

from __future__ import annotations

import math
import numbers
from statistics import NormalDist

import numpy as np

UNKNOWN = "<unknown>"  # what predict answers for a refused query; refused as a class label
DEFAULT_RATE = 0.01  # target share of images of the learned classes refused ("auto")
MAX_RATE = 0.5
# Measured with models/omniglot on its 4 validation alphabets (Canadian syllabics, Tagalog), not on the
# alphabets the figures are reported on (scripts/open_set_study.py --alphabets val, docs/open_set.md):
LOG_SPREAD_PRIOR = 0.45  # std of log leave-one-out distances within a class
PRIOR_WEIGHT = 4.0  # pseudo-observations of LOG_SPREAD_PRIOR
ONE_SHOT_RATIO = (
    -1.70,
    0.71,
)  # mean, std of log(query distance / median nearest-prototype distance), 1-shot
RULES = ("leave-one-out", "nearest-class", "none")


def check_rate(unknown) -> float | None:
    """The target false-rejection rate of ``unknown``: None/False (off), "auto" (``DEFAULT_RATE``) or a
    number in (0, ``MAX_RATE``]; ValueError (one line) otherwise."""
    if unknown is None or unknown is False:
        return None
    if isinstance(unknown, str):
        if unknown == "auto":
            return DEFAULT_RATE
        raise ValueError(
            f"unknown must be None, 'auto' or a rate in (0, {MAX_RATE:g}], got {unknown[:40]!r}"
        )
    if (
        isinstance(unknown, (bool, np.bool_))
        or not isinstance(unknown, numbers.Real)
        or not (math.isfinite(unknown) and 0 < unknown <= MAX_RATE)
    ):
        raise ValueError(
            f"unknown must be None, 'auto' or a rate in (0, {MAX_RATE:g}], got {unknown!r}"[:200]
        )
    return float(unknown)


def prototypes(hidden: list) -> np.ndarray:
    """(C, d) class means of the support head outputs ``hidden`` (one (k, d) array per class)."""
    return np.stack([np.asarray(h, np.float64).mean(axis=0) for h in hidden]).astype(np.float32)


def nearest_distance(h: np.ndarray, protos: np.ndarray) -> np.ndarray:
    """(n,) squared distance of each head output to its nearest prototype (O(n*C) memory: call in blocks)."""
    h = np.asarray(h, np.float32)
    d = (
        np.sum(h * h, axis=1)[:, None]
        - 2.0 * (h @ protos.T)
        + np.sum(protos * protos, axis=1)[None]
    )
    return np.maximum(d.min(axis=1), 0.0)


def leave_one_out(hidden: list) -> np.ndarray:
    """Corrected leave-one-out squared distances of the support images of classes with 2+ images."""
    out = []
    for h in hidden:
        h, n = np.asarray(h, np.float64), len(h)
        if n < 2:
            continue
        others = (h.sum(axis=0)[None] - h) / (n - 1)
        out.append(np.sum((h - others) ** 2, axis=1) * ((n + 1) * (n - 1) / n**2))
    return np.concatenate(out) if out else np.zeros(0)


def calibrate(hidden: list, rate: float) -> dict:
    """The rejection threshold for support head outputs ``hidden`` (one (k, d) array per class).

    Returns:
      ``{"rate", "threshold" (float, or None for rule "none"), "rule", "samples"}``: what the state keeps.
    """
    z = NormalDist().inv_cdf(1.0 - rate)
    loo = leave_one_out(hidden)
    if len(loo):
        logs = np.log(np.maximum(loo, 1e-12))
        m = len(np.unique(loo))
        var = float(logs.var(ddof=1)) if m > 1 else 0.0
        spread = math.sqrt(
            ((m - 1) * var + PRIOR_WEIGHT * LOG_SPREAD_PRIOR**2) / (m - 1 + PRIOR_WEIGHT)
        )
        threshold = math.exp(float(logs.mean()) + z * spread * math.sqrt(1.0 + 2.0 / m))
        return {
            "rate": rate,
            "threshold": threshold,
            "rule": "leave-one-out",
            "samples": int(len(loo)),
        }
    if len(hidden) >= 2:
        p = prototypes(hidden).astype(np.float64)
        d = np.sum((p[:, None] - p[None]) ** 2, axis=-1)
        np.fill_diagonal(d, np.inf)
        scale = float(np.median(d.min(axis=1)))
        threshold = scale * math.exp(ONE_SHOT_RATIO[0] + z * ONE_SHOT_RATIO[1])
        return {
            "rate": rate,
            "threshold": threshold,
            "rule": "nearest-class",
            "samples": len(hidden),
        }
    return {"rate": rate, "threshold": None, "rule": "none", "samples": 0}


def check_setting(unknown) -> dict | None:
    """A stored ``unknown`` setting (from a state file) checked: None, or a dict as ``calibrate`` returns."""
    if unknown is None:
        return None
    if not isinstance(unknown, dict) or unknown.get("rule") not in RULES:
        raise ValueError("'unknown' must be an object with a rule among " + ", ".join(RULES))
    rate, t = check_rate(unknown.get("rate")), unknown.get("threshold")
    if rate is None:
        raise ValueError("'unknown.rate' is missing")
    if (t is None) != (unknown["rule"] == "none") or (
        t is not None
        and not (
            isinstance(t, numbers.Real) and not isinstance(t, bool) and math.isfinite(t) and t >= 0
        )
    ):
        raise ValueError(f"'unknown.threshold' {str(t)[:30]} does not fit rule {unknown['rule']!r}")
    samples = unknown.get("samples", 0)
    return {
        "rate": rate,
        "threshold": None if t is None else float(t),
        "rule": unknown["rule"],
        "samples": int(samples)
        if isinstance(samples, int) and not isinstance(samples, bool)
        else 0,
    }


def describe(setting: dict | None) -> str:
    """One line for ``device status`` and ``--verbose``."""
    if setting is None:
        return "off"
    if setting["threshold"] is None:
        return f"on (target {100 * setting['rate']:g}%) but uncalibrated: one class with one image refuses nothing"
    return (
        f"threshold {setting['threshold']:.4g} ({setting['rule']}, {setting['samples']} "
        f"{'distances' if setting['rule'] == 'leave-one-out' else 'classes'}, target {100 * setting['rate']:g}%)"
    )
