"""The head: meta-learned Dense layers + a per-task prototype classifier, adapted with analytic gradients.

Pure numpy; this is the device contract (docs/DESIGN.md, "Head"). Training's ANIL inner loop and
``metalite evaluate`` compute the same thing, so accuracy measured on the workstation is what the
device gets. ``adapt`` takes support embeddings and integer labels and returns an ``AdaptedHead``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

HEAD_FORMAT = "metalite-head"
HEAD_FORMAT_VERSION = 1
ACTIVATIONS = ("linear", "relu")
DEFAULT_ADAPTATION = {"steps": 0, "lr": 0.5, "scale": 1.0, "adapt": "head"}


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
            "layers": [{"units": int(w.shape[1]), "activation": a} for (w, _), a in zip(self.weights, self.activations)],
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


def load_head(path) -> HeadSpec:
    """Read head.npz; raises ValueError naming what is wrong (never needs pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            cfg = json.loads(str(z["config"]))
            if cfg.get("format") != HEAD_FORMAT or cfg.get("format_version") != HEAD_FORMAT_VERSION:
                raise ValueError(f"unknown head format {cfg.get('format')!r} v{cfg.get('format_version')!r}")
            layers = cfg["layers"]
            weights = [(z[f"W{i}"].astype(np.float32), z[f"b{i}"].astype(np.float32)) for i in range(len(layers))]
    except ValueError:
        raise
    except Exception as e:  # zipfile/KeyError/json errors all mean a corrupt head
        raise ValueError(f"{path}: not a valid head.npz ({type(e).__name__}: {e})") from None
    acts = [l["activation"] for l in layers]
    for a in acts:
        if a not in ACTIVATIONS:
            raise ValueError(f"{path}: unknown activation {a!r}")
    adaptation = dict(DEFAULT_ADAPTATION)
    adaptation.update(cfg.get("adaptation", {}))
    return HeadSpec(weights, acts, adaptation)


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
    return (2.0 * scale * protos.T).astype(np.float32), (-scale * np.sum(protos**2, axis=1)).astype(np.float32)


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
        h = hidden_forward(self.weights, self.activations, np.asarray(e, np.float32))[-1]
        return h @ self.classifier[0] + self.classifier[1]

    def predict_proba(self, e: np.ndarray) -> np.ndarray:
        return softmax(self.logits(e)).astype(np.float32)


def adapt(spec: HeadSpec, embeddings: np.ndarray, labels: np.ndarray, n_classes: int | None = None,
          steps: int | None = None, lr: float | None = None) -> AdaptedHead:
    """Fit the head to a support set: prototype init, then full-batch gradient descent on cross-entropy.

    ``embeddings``: (n, d) float; ``labels``: (n,) ints in [0, n_classes). Deterministic (no sampling).
    ``steps``/``lr`` override the meta-learned settings. Every class must have at least one example.
    """
    e = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels).astype(np.int64)
    if e.ndim != 2 or len(e) == 0:
        raise ValueError(f"support embeddings must be a non-empty (n, d) array, got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError("support embeddings contain NaN or infinite values")
    n_classes = int(y.max()) + 1 if n_classes is None else n_classes
    missing = sorted(set(range(n_classes)) - set(y.tolist()))
    if missing:
        raise ValueError(f"classes {missing} have no support examples")
    ad = spec.adaptation
    steps = int(ad["steps"] if steps is None else steps)
    lr = float(ad["lr"] if lr is None else lr)
    scale = float(ad["scale"])
    adapt_hidden = ad.get("adapt", "head") == "head"

    weights = [(w.copy(), b.copy()) for w, b in spec.weights]
    acts = list(spec.activations)
    xs = hidden_forward(weights, acts, e)
    wc, bc = prototype_classifier(xs[-1], y, n_classes, scale)
    onehot = np.eye(n_classes, dtype=np.float32)[y]
    n = len(e)
    for _ in range(steps):
        xs = hidden_forward(weights, acts, e)
        p = softmax(xs[-1] @ wc + bc)
        g = (p - onehot) / n  # d loss / d logits, loss = mean cross-entropy
        gh = g @ wc.T
        wc = wc - lr * (xs[-1].T @ g)
        bc = bc - lr * g.sum(axis=0)
        if adapt_hidden:
            for i in range(len(weights) - 1, -1, -1):
                if acts[i] == "relu":
                    gh = gh * (xs[i + 1] > 0)
                w, b = weights[i]
                gprev = gh @ w.T
                weights[i] = (w - lr * (xs[i].T @ gh), b - lr * gh.sum(axis=0))
                gh = gprev
    return AdaptedHead(weights, acts, (wc.astype(np.float32), bc.astype(np.float32)))


def refine(head: AdaptedHead, support: np.ndarray, labels: np.ndarray, queries: np.ndarray, scale: float,
           iterations: int = 3) -> AdaptedHead:
    """Transductive refinement over a batch of queries (soft k-means, Ren et al. 2018): each prototype
    becomes the mean of its support outputs and the queries weighted by their class probabilities.

    Opt-in: a query's prediction then depends on the other queries of the batch (best when the batch
    holds many queries of the learned classes). The first assignment uses ``head``'s own logits; the
    hidden layers are kept. Returns a new ``AdaptedHead`` with a prototype classifier.
    """
    y = np.asarray(labels).astype(np.int64)
    n_classes = head.classifier[1].shape[0]
    hs = hidden_forward(head.weights, head.activations, np.asarray(support, np.float32))[-1]
    hq = hidden_forward(head.weights, head.activations, np.asarray(queries, np.float32))[-1]
    sums = np.zeros((n_classes, hs.shape[1]), np.float64)
    np.add.at(sums, y, hs)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    p = softmax(hq @ head.classifier[0] + head.classifier[1])
    for _ in range(int(iterations)):
        protos = (sums + p.T @ hq) / (counts + p.sum(axis=0))[:, None]
        w, b = (2.0 * scale * protos.T).astype(np.float32), (-scale * np.sum(protos**2, axis=1)).astype(np.float32)
        p = softmax(hq @ w + b)
    return AdaptedHead(head.weights, head.activations, (w, b))
