"""Meta-learners with one interface: ``learner.train_step(episode) -> {"loss", "acc"}``.

All four adapt per task the way the device does (``metalite.runtime.head``): a classifier built from
class prototypes of the head's output, refined by gradient steps. They differ in what the inner loop
touches and how the outer update is formed:

- ``protonet`` (Snell et al. 2017): no inner loop; query cross-entropy against prototypes.
- ``anil`` (Raghu et al. 2020): inner loop on the head only (exactly the device), second-order through it.
- ``fomaml`` (Finn et al. 2017, first-order): inner loop on every weight; the query gradient at the
  adapted weights is applied to the original ones.
- ``reptile`` (Nichol et al. 2018): inner SGD on the task; the outer step moves the weights toward
  the adapted ones, ``theta += eps * (theta' - theta)``.
"""

from __future__ import annotations

from metalite.export.tfcompat import keras, tf

from .settings import ALGORITHMS, DEFAULT_HPARAMS

# What the device does after training with each algorithm (head.npz "adaptation").
DEVICE_ADAPTATION = {
    "protonet": lambda hp: {
        "steps": 0,
        "lr": hp["inner_lr"],
        "scale": hp["scale"],
        "adapt": "head",
    },
    "anil": lambda hp: {
        "steps": hp["inner_steps"],
        "lr": hp["inner_lr"],
        "scale": hp["scale"],
        "adapt": "head",
    },
    "fomaml": lambda hp: {
        "steps": hp["inner_steps"],
        "lr": hp["inner_lr"],
        "scale": hp["scale"],
        "adapt": "head",
    },
    "reptile": lambda hp: {
        "steps": hp["inner_steps"],
        "lr": hp["inner_lr"],
        "scale": hp["scale"],
        "adapt": "head",
    },
}


def _hidden(head, params, h):
    """Apply the head's Dense layers with explicit (kernel, bias) tensors ``params``."""
    for i, layer in enumerate(head.layers):
        h = tf.matmul(h, params[2 * i]) + params[2 * i + 1]
        if layer.get_config()["activation"] == "relu":
            h = tf.nn.relu(h)
    return h


def prototype_classifier(h, y, ways, scale):
    """(W, b) with logits = -scale*|h - c_k|^2 + const; the TF twin of runtime.head.prototype_classifier."""
    protos = tf.math.unsorted_segment_mean(h, y, ways)
    return 2.0 * scale * tf.transpose(protos), -scale * tf.reduce_sum(protos**2, axis=1)


def _xent(logits, y):
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))


def _acc(logits, y):
    return tf.reduce_mean(
        tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), y), tf.float32)
    )


class MetaLearner:
    """Holds backbone, head and outer optimizer; subclasses define ``_step``.

    ``aux_loss(embeddings, x)`` (optional, e.g. distillation) is added to the outer loss; it gets
    the backbone's embeddings of [support; query] and the images.
    """

    name = "base"

    def __init__(self, backbone, head, hparams=None, aux_loss=None):
        self.backbone, self.head = backbone, head
        self.hp = {**DEFAULT_HPARAMS[self.name], **(hparams or {})}
        self.aux_loss = aux_loss
        self.optimizer = (
            keras.optimizers.Adam(self.hp["lr"])
            if self.name != "reptile"
            else keras.optimizers.SGD(self.hp["lr"])
        )
        self._fn = None

    @property
    def variables(self):
        return self.backbone.trainable_variables + self.head.trainable_variables

    def device_adaptation(self) -> dict:
        return DEVICE_ADAPTATION[self.name](self.hp)

    def train_step(self, episode) -> dict:
        """One outer update from one episode; returns float loss and query accuracy."""
        xs, ys = tf.constant(episode.support_x), tf.constant(episode.support_y, tf.int32)
        xq, yq = tf.constant(episode.query_x), tf.constant(episode.query_y, tf.int32)
        if self._fn is None:
            self._fn = tf.function(self._step, reduce_retracing=True)
        loss, acc = self._fn(xs, ys, xq, yq, tf.constant(episode.ways))
        return {"loss": float(loss), "acc": float(acc)}

    def _embed(self, xs, xq):
        x = tf.concat([xs, xq], 0)
        e = self.backbone(x, training=True)
        return e, tf.shape(xs)[0]


class ProtoNet(MetaLearner):
    name = "protonet"

    def query_loss(self, xs, ys, xq, yq, ways):
        """Differentiable episode loss (also used by compression fine-tuning)."""
        e, n = self._embed(xs, xq)
        h = self.head(e, training=True)
        w, b = prototype_classifier(h[:n], ys, ways, self.hp["scale"])
        logits = tf.matmul(h[n:], w) + b
        loss = _xent(logits, yq)
        if self.aux_loss is not None:
            loss = loss + self.aux_loss(e, tf.concat([xs, xq], 0))
        return loss, _acc(logits, yq)

    def compute_gradients(self, xs, ys, xq, yq, ways):
        """(gradients of query_loss w.r.t. ``variables``, loss, acc) for one episode (no update)."""
        with tf.GradientTape() as tape:
            loss, acc = self.query_loss(xs, ys, xq, yq, ways)
        return tape.gradient(loss, self.variables), loss, acc

    def _step(self, xs, ys, xq, yq, ways):
        grads, loss, acc = self.compute_gradients(xs, ys, xq, yq, ways)
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return loss, acc


class ANIL(ProtoNet):
    name = "anil"

    def adapt_head(self, h_s, ys, ways, params):
        """Prototype init, then inner_steps of gradient descent on (hidden layers, classifier)."""
        hp = self.hp
        w, b = prototype_classifier(_hidden(self.head, params, h_s), ys, ways, hp["scale"])
        fast = list(params) + [w, b]
        for _ in range(hp["inner_steps"]):
            with tf.GradientTape() as tape:
                tape.watch(fast)
                logits = tf.matmul(_hidden(self.head, fast[:-2], h_s), fast[-2]) + fast[-1]
                loss = _xent(logits, ys)
            grads = tape.gradient(loss, fast)
            if hp.get("first_order"):
                grads = [tf.stop_gradient(g) for g in grads]
            fast = [p - hp["inner_lr"] * g for p, g in zip(fast, grads)]
        return fast

    def query_loss(self, xs, ys, xq, yq, ways):
        e, n = self._embed(xs, xq)
        fast = self.adapt_head(
            e[:n], ys, ways, [tf.identity(v) for v in self.head.trainable_variables]
        )
        logits = tf.matmul(_hidden(self.head, fast[:-2], e[n:]), fast[-2]) + fast[-1]
        loss = _xent(logits, yq)
        if self.aux_loss is not None:
            loss = loss + self.aux_loss(e, tf.concat([xs, xq], 0))
        return loss, _acc(logits, yq)


class _InnerLoopLearner(MetaLearner):
    """Shared machinery for learners whose inner loop changes every weight (FOMAML, Reptile)."""

    def _backup(self):
        if not hasattr(self, "_saved"):
            self._saved = [tf.Variable(v, trainable=False) for v in self.variables]
        for s, v in zip(self._saved, self.variables):
            s.assign(v)

    def _restore(self):
        for s, v in zip(self._saved, self.variables):
            v.assign(s)

    def _task_loss(self, x, y, w, b):
        logits = tf.matmul(self.head(self.backbone(x, training=True), training=True), w) + b
        return _xent(logits, y), logits

    def _inner(self, xs, ys, ways, x_fit, y_fit):
        """Prototype classifier from the support set, then inner SGD on (all weights, classifier)."""
        h = self.head(self.backbone(xs, training=True), training=True)
        w, b = prototype_classifier(h, ys, ways, self.hp["scale"])
        w, b = tf.Variable(tf.stop_gradient(w)), tf.Variable(tf.stop_gradient(b))
        for _ in range(self.hp["inner_steps"]):
            with tf.GradientTape() as tape:
                loss, _ = self._task_loss(x_fit, y_fit, w, b)
            grads = tape.gradient(loss, self.variables + [w, b])
            for v, g in zip(self.variables + [w, b], grads):
                v.assign_sub(self.hp["inner_lr"] * g)
        return w, b

    def train_step(self, episode) -> dict:
        # Eager: the inner loop creates per-task classifier variables, which tf.function forbids.
        xs, ys = tf.constant(episode.support_x), tf.constant(episode.support_y, tf.int32)
        xq, yq = tf.constant(episode.query_x), tf.constant(episode.query_y, tf.int32)
        loss, acc = self._outer(xs, ys, xq, yq, episode.ways)
        return {"loss": float(loss), "acc": float(acc)}


class FOMAML(_InnerLoopLearner):
    name = "fomaml"

    def _outer(self, xs, ys, xq, yq, ways):
        self._backup()
        w, b = self._inner(xs, ys, ways, xs, ys)
        with tf.GradientTape() as tape:
            loss, logits = self._task_loss(xq, yq, w, b)
            if self.aux_loss is not None:
                loss = loss + self.aux_loss(
                    self.backbone(tf.concat([xs, xq], 0), training=True), tf.concat([xs, xq], 0)
                )
        grads = tape.gradient(loss, self.variables)  # first order: gradient at the adapted weights
        self._restore()
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return loss, _acc(logits, yq)


class Reptile(_InnerLoopLearner):
    name = "reptile"

    def _outer(self, xs, ys, xq, yq, ways):
        self._backup()
        x_all, y_all = tf.concat([xs, xq], 0), tf.concat([ys, yq], 0)
        w, b = self._inner(xs, ys, ways, x_all, y_all)
        loss, logits = self._task_loss(xq, yq, w, b)  # after adaptation, for the progress bar
        # The optimizer (SGD, lr = eps) applies the pseudo-gradient theta - theta'.
        grads = [s - v for s, v in zip(self._saved, self.variables)]
        self._restore()
        self.optimizer.apply_gradients(zip(grads, self.variables))
        return loss, _acc(logits, yq)


_CLASSES = {c.name: c for c in (ProtoNet, ANIL, FOMAML, Reptile)}


def make_learner(algorithm: str, backbone, head, hparams=None, aux_loss=None) -> MetaLearner:
    """The learner for ``algorithm`` (one of ALGORITHMS) over ``backbone`` and ``head``."""
    if algorithm not in _CLASSES:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    return _CLASSES[algorithm](backbone, head, hparams, aux_loss)
