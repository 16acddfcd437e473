"""Distillation during compression: the float model teaches the compressed one (``metalite compress --distill``).

``make_distill_loss`` returns the learner's ``aux_loss(embeddings, images)``, added to the episode's
meta-objective on every fine-tuning step. With ``shifts`` the teacher's target is its embedding averaged
over the image and its one-pixel shifts (the runtime's ``tta``): a student taught that needs one backbone
run per image where the teacher needs ``1 + shifts``.
"""

from __future__ import annotations

import numpy as np

from .errors import CompressError

DISTILL_LOSSES = ("kl", "mse", "cosine")
TEMPERATURE = 4.0  # of the "kl" loss
WEIGHT = 1.0  # of the distillation term against the meta-objective


def shift_images(x, dy: int, dx: int):
    """A batch (N, H, W, C) of tensors moved by (dy, dx) pixels, uncovered pixels 0: ``runtime.tta.shifted``."""
    from metalite.export.tfcompat import tf

    h, w = x.shape[1], x.shape[2]
    padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    return padded[:, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w, :]


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
    shifts: int = 0,
):
    """``aux_loss(embeddings, images)`` for the learner: the float model teaches the compressed one.

    ``shifts`` (0, 4 or 8): the teacher's embedding is the mean over the image and that many one-pixel
    shifts of it, as the runtime's shift averaging computes it (``runtime.tta.SHIFTS``).

    - ``kl``: KL(teacher || student) of the episode's prototype logits (queries against the support
      prototypes, through each model's head) at temperature T, times T^2 (Hinton et al. 2015).
    - ``mse``: squared embedding error relative to the teacher's mean squared embedding.
    - ``cosine``: 1 - cosine similarity between student and teacher embeddings.
    """
    from metalite.export.tfcompat import tf
    from metalite.runtime.tta import SHIFTS, check_copies

    from .algorithms import prototype_classifier

    moves = SHIFTS[check_copies(shifts)]
    if kind not in DISTILL_LOSSES:
        raise CompressError(
            f"unknown distillation loss {kind!r}; choose one of {', '.join(DISTILL_LOSSES)}"
        )
    ys = tf.constant(np.repeat(np.arange(ways), shots), tf.int32)

    def logits(h):
        w, b = prototype_classifier(h[:n_support], ys, ways, scale)
        return tf.matmul(h[n_support:], w) + b

    def aux(e, x):
        if moves:
            n = tf.shape(x)[0]
            batch = tf.concat([x] + [shift_images(x, dy, dx) for dy, dx in moves], 0)
            t = tf.reduce_mean(
                tf.reshape(teacher(batch, training=False), [1 + len(moves), n, -1]), 0
            )
        else:
            t = teacher(x, training=False)
        t = tf.stop_gradient(t)
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
