"""Few-shot accuracy the way the device gets it: frozen backbone, head-only adaptation in numpy.

Embeddings of every image of the split are computed once (the backbone never changes during
adaptation), then each episode runs ``metalite.runtime.head.adapt`` on its support embeddings.
"""

from __future__ import annotations

import math

import numpy as np

from metalite.runtime import openset
from metalite.runtime.head import HeadSpec, adapt, hidden_forward

from .datasets import FewShotData
from .episodes import EpisodeSampler
from .errors import DataError


def embed_all(embed_fn, data: FewShotData, batch: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of every image of ``data``; ``embed_fn`` maps model input batches."""
    x = data.inputs()
    return np.concatenate(
        [np.asarray(embed_fn(x[i : i + batch]), np.float32) for i in range(0, len(x), batch)]
    )


def keras_embed_fn(backbone):
    """embed_fn for a keras backbone in inference mode."""
    from metalite.export.tfcompat import tf

    fn = tf.function(lambda x: backbone(x, training=False), reduce_retracing=True)
    return lambda x: fn(tf.constant(x)).numpy()


def mean_ci95(accs) -> tuple:
    """(mean, half-width of the 95% normal confidence interval) of per-episode accuracies."""
    a = np.asarray(accs, dtype=np.float64)
    return float(a.mean()), float(1.96 * a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0


def pixel_features(data: FewShotData) -> np.ndarray:
    """Raw model input (ink = 1) flattened: the features of the raw-pixel baseline."""
    return data.inputs().reshape(len(data.images), -1)


def nearest_neighbour(support: np.ndarray, ys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Labels of the Euclidean-nearest support vector of each query (the raw-pixel baseline's classifier)."""
    d = (query**2).sum(1)[:, None] - 2.0 * query @ support.T + (support**2).sum(1)[None, :]
    return np.asarray(ys)[d.argmin(1)]


def evaluate_embeddings(
    emb: np.ndarray,
    data: FewShotData,
    spec: HeadSpec | None,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    within_group: bool = False,
    steps: int | None = None,
    progress=None,
    classify=None,
) -> dict:
    """Mean accuracy and 95% CI over ``episodes`` N-way K-shot episodes, head-only adaptation; or with
    ``classify(support, labels, query) -> labels`` (e.g. ``nearest_neighbour``) instead of the head. The
    same ``seed`` draws the same episodes, so a model and a baseline are compared pair by pair."""
    sampler = EpisodeSampler(data, ways, shots, queries, seed=seed, within_group=within_group)
    accs = []
    for _ in range(episodes):
        s_idx, q_idx = sampler.sample_indices()
        ys, yq = np.repeat(np.arange(ways), shots), np.repeat(np.arange(ways), queries)
        if classify is not None:
            pred = classify(emb[s_idx], ys, emb[q_idx])
        else:
            pred = adapt(spec, emb[s_idx], ys, ways, steps=steps).logits(emb[q_idx]).argmax(1)
        accs.append(float((pred == yq).mean()))
        if progress is not None:
            progress(1)
    mean, ci = mean_ci95(accs)
    return {
        "mean": mean,
        "ci95": ci,
        "episodes": episodes,
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "within_alphabet": within_group,
        "seed": seed,
    }


def auroc(unknown_scores: np.ndarray, known_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling unknown from known by score (higher = more unknown), ties half."""
    s = np.concatenate([unknown_scores, known_scores])
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    for v in np.unique(
        s[order][np.flatnonzero(np.diff(s[order]) == 0)]
    ):  # average ranks of tied scores
        ranks[s == v] = ranks[s == v].mean()
    n = len(unknown_scores)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * len(known_scores)))


def evaluate_open_set(
    emb: np.ndarray,
    data: FewShotData,
    spec: HeadSpec,
    ways: int,
    shots: int,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    rate: float = openset.DEFAULT_RATE,
    within_group: bool = False,
    steps: int | None = None,
    progress=None,
) -> dict:
    """Open-set N-way K-shot episodes: each also has ``queries`` images of each of N classes outside its
    support set (as many unknown queries as known). The device's rule (``metalite.runtime.openset``): head
    adapted on the support set, threshold calibrated from it at target false-rejection ``rate``.

    Returns mean and 95% CI of: ``auroc`` (known vs unknown by distance to the nearest prototype),
    ``closed_accuracy`` (known queries, no rejection), ``known_accuracy`` (right class and not refused),
    ``false_rejection`` (known queries refused), ``unknown_rejected`` (unknown queries refused); and how
    often each calibration rule was used.
    """
    sampler = EpisodeSampler(data, 2 * ways, shots, queries, seed=seed, within_group=within_group)
    keys = ("auroc", "closed_accuracy", "known_accuracy", "false_rejection", "unknown_rejected")
    got, rules = {k: [] for k in keys}, {}
    ys, yq = np.repeat(np.arange(ways), shots), np.repeat(np.arange(ways), queries)
    for _ in range(episodes):
        s_idx, q_idx = sampler.sample_indices()
        s_idx, known, unknown = (
            s_idx[: ways * shots],
            q_idx[: ways * queries],
            q_idx[ways * queries :],
        )
        head = adapt(spec, emb[s_idx], ys, ways, steps=steps)
        hidden = hidden_forward(head.weights, head.activations, emb[s_idx])[-1]
        per_class = [hidden[ys == k] for k in range(ways)]
        setting, protos = openset.calibrate(per_class, rate), openset.prototypes(per_class)
        rules[setting["rule"]] = rules.get(setting["rule"], 0) + 1
        dist = [
            openset.nearest_distance(
                hidden_forward(head.weights, head.activations, emb[i])[-1], protos
            )
            for i in (known, unknown)
        ]
        t = np.inf if setting["threshold"] is None else setting["threshold"]
        right = head.logits(emb[known]).argmax(1) == yq
        got["auroc"].append(auroc(dist[1], dist[0]))
        got["closed_accuracy"].append(float(right.mean()))
        got["known_accuracy"].append(float((right & (dist[0] <= t)).mean()))
        got["false_rejection"].append(float((dist[0] > t).mean()))
        got["unknown_rejected"].append(float((dist[1] > t).mean()))
        if progress is not None:
            progress(1)
    out = {k: dict(zip(("mean", "ci95"), mean_ci95(v))) for k, v in got.items()}
    return {
        **out,
        "rules": rules,
        "rate": rate,
        "episodes": episodes,
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "unknown_queries": ways * queries,
        "within_alphabet": within_group,
        "seed": seed,
    }


def episode_settings(
    data: FewShotData, ways_list=(5, 20), shots: int = 1, max_queries: int = 15
) -> list:
    """[(ways, shots, queries)] that ``data`` can supply: ways clamped to the classes with more than ``shots``
    images, queries as many as the ways-th largest class allows (at most ``max_queries``), duplicates dropped.
    DataError when not even 2-way episodes fit."""
    counts = data.counts()
    usable = counts >= shots + 1
    out = []
    for ways in ways_list:
        w = min(int(ways), int(usable.sum()))
        if w < 2:
            continue
        q = int(min(max_queries, np.sort(counts[usable])[::-1][w - 1] - shots))
        if (w, shots, q) not in out:
            out.append((w, shots, q))
    if not out:
        raise DataError(
            f"{data.spec or 'data'}: the classes cannot supply even 2-way {shots}-shot episodes"
        )
    return out


def accuracy_by_setting(
    emb: np.ndarray, data: FewShotData, spec: HeadSpec, settings, episodes: int, seed: int = 1234
) -> dict:
    """{"5way1shot": evaluate_embeddings(...), ...} for ``settings`` from ``episode_settings``; the same seed
    gives the same episodes to every model compared."""
    return {
        f"{w}way{s}shot": evaluate_embeddings(emb, data, spec, w, s, q, episodes, seed=seed)
        for w, s, q in settings
    }
