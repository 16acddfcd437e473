"""Distillation during compression: the float model teaches the compressed one (``metalite compress --distill``).

``make_distill_loss`` returns the learner's ``aux_loss(embeddings, images)``, added to the episode's
meta-objective on every fine-tuning step.
"""

from __future__ import annotations

import numpy as np

from .errors import CompressError

DISTILL_LOSSES = ("kl", "mse", "cosine")
TEMPERATURE = 4.0  # of the "kl" loss
WEIGHT = 1.0  # of the distillation term against the meta-objective


def make_distill_loss(
    kind: str,
    teacher,
    teacher_head,
    student_head,
    n_support: int,
    ways: int,
    shots: int,
    scale: float,
    temperature: float = TEMPERATURE,
    weight: float = WEIGHT,
):
    """``aux_loss(embeddings, images)`` for the learner: the float model teaches the compressed one.

    - ``kl``: KL(teacher || student) of the episode's prototype logits (queries against the support
      prototypes, through each model's head) at temperature T, times T^2 (Hinton et al. 2015).
    - ``mse``: squared embedding error relative to the teacher's mean squared embedding.
    - ``cosine``: 1 - cosine similarity between student and teacher embeddings.
    """
    from metalite.export.tfcompat import tf

    from .algorithms import prototype_classifier

    if kind not in DISTILL_LOSSES:
        raise CompressError(
            f"unknown distillation loss {kind!r}; choose one of {', '.join(DISTILL_LOSSES)}"
        )
    ys = tf.constant(np.repeat(np.arange(ways), shots), tf.int32)

    def logits(h):
        w, b = prototype_classifier(h[:n_support], ys, ways, scale)
        return tf.matmul(h[n_support:], w) + b

    def aux(e, x):
        t = tf.stop_gradient(teacher(x, training=False))
        if kind == "mse":
            loss = tf.reduce_mean(tf.square(e - t)) / (tf.reduce_mean(tf.square(t)) + 1e-8)
        elif kind == "cosine":
            loss = 1.0 - tf.reduce_mean(
                tf.reduce_sum(tf.math.l2_normalize(e, 1) * tf.math.l2_normalize(t, 1), 1)
            )
        else:
            lt = tf.stop_gradient(logits(teacher_head(t, training=False))) / temperature
            ls = logits(student_head(e, training=True)) / temperature
            kl = tf.reduce_sum(
                tf.nn.softmax(lt) * (tf.nn.log_softmax(lt) - tf.nn.log_softmax(ls)), 1
            )
            loss = tf.reduce_mean(kl) * temperature**2
        return weight * loss

    return aux
