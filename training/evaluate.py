"""Few-shot accuracy the way the device gets it: frozen backbone, head-only adaptation in numpy.

Embeddings of every image of the split are computed once (the backbone never changes during
adaptation), then each episode runs ``metalite.runtime.head.adapt`` on its support embeddings.
"""
from __future__ import annotations

import math

import numpy as np

from metalite.runtime.head import HeadSpec, adapt

from .datasets import FewShotData
from .episodes import EpisodeSampler


def embed_all(embed_fn, data: FewShotData, batch: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of every image of ``data``; ``embed_fn`` maps model input batches."""
    x = data.inputs()
    return np.concatenate([np.asarray(embed_fn(x[i:i + batch]), np.float32) for i in range(0, len(x), batch)])


def keras_embed_fn(backbone):
    """embed_fn for a keras backbone in inference mode."""
    import tensorflow as tf

    fn = tf.function(lambda x: backbone(x, training=False), reduce_retracing=True)
    return lambda x: fn(tf.constant(x)).numpy()


def mean_ci95(accs) -> tuple:
    """(mean, half-width of the 95% normal confidence interval) of per-episode accuracies."""
    a = np.asarray(accs, dtype=np.float64)
    return float(a.mean()), float(1.96 * a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else 0.0


def evaluate_embeddings(emb: np.ndarray, data: FewShotData, spec: HeadSpec, ways: int, shots: int,
                        queries: int = 15, episodes: int = 600, seed: int = 0, within_group: bool = False,
                        steps: int | None = None, progress=None) -> dict:
    """Mean accuracy and 95% CI over ``episodes`` N-way K-shot episodes, head-only adaptation."""
    sampler = EpisodeSampler(data, ways, shots, queries, seed=seed, within_group=within_group)
    accs = []
    for _ in range(episodes):
        s_idx, q_idx = sampler.sample_indices()
        ys, yq = np.repeat(np.arange(ways), shots), np.repeat(np.arange(ways), queries)
        head = adapt(spec, emb[s_idx], ys, ways, steps=steps)
        accs.append(float((head.logits(emb[q_idx]).argmax(1) == yq).mean()))
        if progress is not None:
            progress(1)
    mean, ci = mean_ci95(accs)
    return {"mean": mean, "ci95": ci, "episodes": episodes, "ways": ways, "shots": shots, "queries": queries,
            "within_alphabet": within_group, "seed": seed}
