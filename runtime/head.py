"""The head: meta-learned Dense layers + a per-task prototype classifier, adapted with analytic gradients.

Pure numpy; this is the device contract (docs/DESIGN.md, "Head"). Training's ANIL inner loop and
``metalite evaluate`` compute the same thing, so accuracy measured on the workstation is what the
device gets. ``adapt`` takes support embeddings and integer labels and returns an ``AdaptedHead``.

Numbers read from files are checked before use (``check_adaptation``, ``check_layers``,
``check_classifier``): weights finite with ``|w| <= MAX_ABS_WEIGHT``, shapes chaining from the
embedding to the classes, ``steps`` an int in [0, ``MAX_STEPS``], ``lr`` in [0, 1e6], ``scale`` in
(0, 1e6]. Adaptation holds O(n*d + C*d) memory for n support rows, C classes and width d: the
softmax over classes is computed in blocks of rows (``ROW_BLOCK_ELEMENTS`` logits at a time).
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass, field

import numpy as np

HEAD_FORMAT = "metalite-head"
HEAD_FORMAT_VERSION = 1
ACTIVATIONS = ("linear", "relu")
DEFAULT_ADAPTATION = {"steps": 0, "lr": 0.5, "scale": 1.0, "adapt": "head"}
ADAPT_MODES = ("head", "classifier")
MAX_STEPS = 1000
MAX_ABS_WEIGHT = 1e12
MAX_LR_SCALE = 1e6
ROW_BLOCK_ELEMENTS = (
    1 << 22
)  # logits per block of support rows during adaptation (16 MiB of float32)


@dataclass
class HeadSpec:
    """Meta-learned hidden layers and the adaptation settings that go with them."""

    weights: list  # [(W (in, out) float32, b (out,) float32), ...]
    activations: list  # one of ACTIVATIONS per layer
    adaptation: dict = field(default_factory=lambda: dict(DEFAULT_ADAPTATION))

    def config(self) -> dict:
        return {
            "format": HEAD_FORMAT,
            "format_version": HEAD_FORMAT_VERSION,
            "layers": [
                {"units": int(w.shape[1]), "activation": a}
                for (w, _), a in zip(self.weights, self.activations)
            ],
            "adaptation": dict(self.adaptation),
        }


def save_head(spec: HeadSpec, path) -> None:
    """Write ``spec`` as head.npz (arrays W0, b0, … and a JSON ``config``) to the open file or path."""
    arrays = {}
    for i, (w, b) in enumerate(spec.weights):
        arrays[f"W{i}"] = np.asarray(w, dtype=np.float32)
        arrays[f"b{i}"] = np.asarray(b, dtype=np.float32)
    arrays["config"] = np.array(json.dumps(spec.config()))
    np.savez(path, **arrays)


def _number(ad: dict, key: str, lo: float, hi: float, lo_open: bool) -> float:
    v = ad.get(key)
    if (
        isinstance(v, (bool, np.bool_))
        or not isinstance(v, numbers.Real)
        or not np.isfinite(v)
        or not ((lo < v if lo_open else lo <= v) and v <= hi)
    ):
        side = "(" if lo_open else "["
        raise ValueError(
            f"adaptation.{key} must be a number in {side}{lo:g}, {hi:g}], got {v!r}"[:200]
        )
    return float(v)


def check_adaptation(ad) -> dict:
    """Return the adaptation settings with defaults filled in, or raise ValueError (one line) naming the bad one."""
    if not isinstance(ad, dict):
        raise ValueError(f"adaptation must be an object, got {type(ad).__name__}")
    out = dict(DEFAULT_ADAPTATION)
    out.update(ad)
    steps = out["steps"]
    if (
        isinstance(steps, (bool, np.bool_))
        or not isinstance(steps, numbers.Integral)
        or not 0 <= steps <= MAX_STEPS
    ):
        raise ValueError(
            f"adaptation.steps must be an integer in [0, {MAX_STEPS}], got {steps!r}"[:200]
        )
    out["steps"] = int(steps)
    out["lr"] = _number(out, "lr", 0.0, MAX_LR_SCALE, lo_open=False)
    out["scale"] = _number(out, "scale", 0.0, MAX_LR_SCALE, lo_open=True)
    if out["adapt"] not in ADAPT_MODES:
        raise ValueError(
            f"adaptation.adapt must be one of {', '.join(ADAPT_MODES)}, got {out['adapt']!r}"[:200]
        )
    return out


def check_float_array(a, name: str, ndim: int) -> np.ndarray:
    """``a`` as float32 if it is an ``ndim``-d float array, finite and within ``MAX_ABS_WEIGHT``; else ValueError."""
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.ndim != ndim:
        kind = (
            f"{a.dtype} array of shape {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        )
        raise ValueError(f"{name} must be a {ndim}-d float array, got a {kind}")
    with np.errstate(over="ignore", invalid="ignore"):
        a = a.astype(np.float32)
        bad = not np.all(np.isfinite(a)) or (a.size and float(np.abs(a).max()) > MAX_ABS_WEIGHT)
    if bad:
        raise ValueError(f"{name} has NaN, infinite or huge values (|w| > {MAX_ABS_WEIGHT:g})")
    return a


def check_layers(weights, activations, in_dim: int | None = None) -> list:
    """Check hidden layers: float, finite, bounded, (W (in, out), b (out,)) chaining from ``in_dim``.

    Returns:
      the layers as float32 ``[(W, b), ...]``. Raises ValueError (one line) naming the bad array.
    """
    if len(weights) != len(activations):
        raise ValueError(f"{len(weights)} layers but {len(activations)} activations")
    out = []
    for i, ((w, b), act) in enumerate(zip(weights, activations)):
        if act not in ACTIVATIONS:
            raise ValueError(f"layer {i}: unknown activation {str(act)[:40]!r}")
        w, b = check_float_array(w, f"W{i}", 2), check_float_array(b, f"b{i}", 1)
        if in_dim is not None and w.shape[0] != in_dim:
            raise ValueError(f"W{i} takes {w.shape[0]} inputs but receives {in_dim}")
        if b.shape != (w.shape[1],):
            raise ValueError(f"b{i} has shape {b.shape}, W{i} gives {w.shape[1]} outputs")
        in_dim = w.shape[1]
        out.append((w, b))
    return out


def check_classifier(w, b, in_dim: int, n_classes: int) -> tuple:
    """Check the classifier: float, finite, bounded, W (in_dim, n_classes) and b (n_classes,); float32 pair."""
    w, b = check_float_array(w, "clf_W", 2), check_float_array(b, "clf_b", 1)
    if w.shape != (in_dim, n_classes) or b.shape != (n_classes,):
        raise ValueError(
            f"classifier shapes {w.shape} and {b.shape} do not fit {in_dim} inputs and {n_classes} classes"
        )
    return w, b


def load_head(path) -> HeadSpec:
    """Read and check head.npz; raises ValueError (one line) naming what is wrong (never needs pickle)."""
    from .npz import read_npz

    arrays = read_npz(path)
    raw = arrays.get("config")
    if raw is None or raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError("no JSON 'config' entry")
    try:
        cfg = json.loads(str(raw))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"config is not valid JSON ({type(e).__name__})") from None
    if (
        not isinstance(cfg, dict)
        or cfg.get("format") != HEAD_FORMAT
        or cfg.get("format_version") != HEAD_FORMAT_VERSION
    ):
        got = (
            (cfg.get("format"), cfg.get("format_version"))
            if isinstance(cfg, dict)
            else (None, None)
        )
        raise ValueError(f"unknown head format {str(got[0])[:40]!r} v{str(got[1])[:20]}")
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not all(isinstance(l, dict) for l in layers):
        raise ValueError("config.layers must be a list of objects")
    missing = [k for i in range(len(layers)) for k in (f"W{i}", f"b{i}") if k not in arrays]
    if missing:
        raise ValueError(f"config lists {len(layers)} layers but {missing[0]} is missing")
    weights = check_layers(
        [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(len(layers))],
        [l.get("activation") for l in layers],
    )
    for i, (l, (w, _)) in enumerate(zip(layers, weights)):
        if l.get("units") != w.shape[1]:
            raise ValueError(
                f"config.layers[{i}].units is {str(l.get('units'))[:20]}, W{i} has {w.shape[1]}"
            )
    adaptation = check_adaptation(cfg.get("adaptation", {}))
    return HeadSpec(weights, [l["activation"] for l in layers], adaptation)


def _act(x, name):
    return np.maximum(x, 0.0) if name == "relu" else x


def hidden_forward(weights, activations, e):
    """Apply the hidden layers; returns the list of layer inputs and the final output."""
    xs = [e]
    for (w, b), a in zip(weights, activations):
        xs.append(_act(xs[-1] @ w + b, a))
    return xs


def prototype_classifier(h, y, n_classes, scale):
    """Classifier weights from class means of ``h``: logits = -scale*|h - c|^2 up to a per-row constant."""
    protos = np.stack([h[y == k].mean(axis=0) for k in range(n_classes)])
    return (2.0 * scale * protos.T).astype(np.float32), (-scale * np.sum(protos**2, axis=1)).astype(
        np.float32
    )


def softmax(logits):
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


@dataclass
class AdaptedHead:
    """A head fitted to one task: hidden layers (possibly adapted) and the classifier."""

    weights: list
    activations: list
    classifier: tuple  # (W (d, n_classes), b (n_classes,))

    def logits(self, e: np.ndarray) -> np.ndarray:
        """Class scores (n, C); may hold inf/NaN if the weights overflow (callers check, numpy stays quiet)."""
        with np.errstate(over="ignore", invalid="ignore"):
            h = hidden_forward(self.weights, self.activations, np.asarray(e, np.float32))[-1]
            return h @ self.classifier[0] + self.classifier[1]

    def predict_proba(self, e: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):
            return softmax(self.logits(e)).astype(np.float32)


def _softmax_rows(h, wc, bc):
    """softmax(h @ wc + bc) computed in place in one (rows, C) buffer (same numbers as ``softmax``)."""
    p = h @ wc
    p += bc
    p -= p.max(axis=1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=1, keepdims=True)
    return p


def _classifier_grads(h, y, wc, bc):
    """Gradients of the mean cross-entropy w.r.t. (wc, bc, h), computing the (n, C) softmax in row blocks."""
    n = len(h)
    rows = max(1, ROW_BLOCK_ELEMENTS // max(1, wc.shape[1]))
    if rows >= n:  # one block: the plain full-batch formula
        g = _softmax_rows(h, wc, bc)
        g[np.arange(n), y] -= 1.0
        g /= n
        return h.T @ g, g.sum(axis=0), g @ wc.T
    gw, gb = np.zeros_like(wc), np.zeros_like(bc)
    gh = np.empty((n, wc.shape[0]), np.float32)
    for s in range(0, n, rows):
        hb = h[s : s + rows]
        g = _softmax_rows(hb, wc, bc)
        g[np.arange(len(hb)), y[s : s + rows]] -= 1.0
        g /= n
        gw += hb.T @ g
        gb += g.sum(axis=0)
        gh[s : s + rows] = g @ wc.T
    return gw, gb, gh


def adapt(
    spec: HeadSpec,
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int | None = None,
    steps: int | None = None,
    lr: float | None = None,
) -> AdaptedHead:
    """Fit the head to a support set: prototype init, then full-batch gradient descent on cross-entropy.

    ``embeddings``: (n, d) float; ``labels``: (n,) ints in [0, n_classes). Deterministic (no sampling).
    ``steps``/``lr`` override the meta-learned settings. Every class must have at least one example.
    Memory is O(n*d + C*d). Raises ValueError (one line) for bad input, bad settings or divergence.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels).astype(np.int64)
    if e.ndim != 2 or len(e) == 0:
        raise ValueError(
            f"support embeddings must be a non-empty (n, d) array, got shape {e.shape}"
        )
    if not np.all(np.isfinite(e)):
        raise ValueError("support embeddings contain NaN or infinite values")
    if y.shape != (len(e),):
        raise ValueError(f"got {len(e)} support embeddings but labels of shape {y.shape}")
    n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes})")
    counts = np.bincount(y, minlength=n_classes)
    if not counts.all():
        missing = np.flatnonzero(counts == 0)
        raise ValueError(
            f"{len(missing)} classes have no support examples (first: {missing[:5].tolist()})"
        )
    ad = check_adaptation(
        {**spec.adaptation, **{k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None}}
    )
    steps, lr, scale = ad["steps"], ad["lr"], ad["scale"]
    adapt_hidden = ad["adapt"] == "head"

    weights = [(w.copy(), b.copy()) for w, b in spec.weights]
    acts = list(spec.activations)
    with np.errstate(over="ignore", invalid="ignore"):
        xs = hidden_forward(weights, acts, e)
        wc, bc = prototype_classifier(xs[-1], y, n_classes, scale)
        for _ in range(steps):
            xs = hidden_forward(weights, acts, e)
            gw, gb, gh = _classifier_grads(xs[-1], y, wc, bc)
            wc = wc - lr * gw
            bc = bc - lr * gb
            if adapt_hidden:
                for i in range(len(weights) - 1, -1, -1):
                    if acts[i] == "relu":
                        gh = gh * (xs[i + 1] > 0)
                    w, b = weights[i]
                    gprev = gh @ w.T
                    weights[i] = (w - lr * (xs[i].T @ gh), b - lr * gh.sum(axis=0))
                    gh = gprev
    head = AdaptedHead(weights, acts, (wc.astype(np.float32), bc.astype(np.float32)))
    if not all(np.all(np.isfinite(a)) for pair in [*weights, head.classifier] for a in pair):
        raise ValueError(
            f"the head diverged (non-finite weights after {steps} steps at lr {lr:g}); "
            "the adaptation settings do not suit these embeddings"
        )
    return head


COVER = 0.8  # refine softly only if this fraction of the learned classes is some query's top choice


def _top_only(p: np.ndarray) -> np.ndarray:
    """``p`` with each row's mass kept only on its top class (as that class's probability)."""
    w = np.zeros_like(p)
    rows = np.arange(len(p))
    top = p.argmax(axis=1)
    w[rows, top] = p[rows, top]
    return w


def refine(
    head: AdaptedHead,
    support: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    scale: float,
    iterations: int = 3,
    cover: float = COVER,
) -> AdaptedHead:
    """Transductive refinement over a batch of queries (soft k-means, Ren et al. 2018): each prototype
    becomes the mean of its support outputs and the queries weighted by their class probabilities.

    Safe on any batch: soft weights are used only when the batch covers the learned classes (at least
    ``cover`` of them are some query's top choice). Otherwise (queries of a few classes) each query counts
    only toward its top class, so the prototypes of classes absent from the batch never move: soft
    weights let them drift toward the queries of the present classes (20-way 1-shot, 15 queries of one
    class: 94.3% -> 81.0%; docs/accuracy.md). Opt-in: a query's prediction depends on the other queries of
    the batch. The first assignment uses ``head``'s own logits; the hidden layers are kept. Returns a new
    ``AdaptedHead`` with a prototype classifier.
    """
    y = np.asarray(labels).astype(np.int64)
    n_classes = head.classifier[1].shape[0]
    hs = hidden_forward(head.weights, head.activations, np.asarray(support, np.float32))[-1]
    hq = hidden_forward(head.weights, head.activations, np.asarray(queries, np.float32))[-1]
    sums = np.zeros((n_classes, hs.shape[1]), np.float64)
    np.add.at(sums, y, hs)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    p = softmax(hq @ head.classifier[0] + head.classifier[1])
    soft = np.mean(np.bincount(p.argmax(axis=1), minlength=n_classes) > 0) >= cover
    w, b = head.classifier
    for _ in range(int(iterations)):
        q = p if soft else _top_only(p)
        protos = (sums + q.T @ hq) / (counts + q.sum(axis=0))[:, None]
        w, b = (
            (2.0 * scale * protos.T).astype(np.float32),
            (-scale * np.sum(protos**2, axis=1)).astype(np.float32),
        )
        p = softmax(hq @ w + b)
    return AdaptedHead(head.weights, head.activations, (w, b))
