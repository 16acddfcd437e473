"""The TFLite on-device-training baseline of the ``adaptation`` section: the bundle's head as a TFLite model
with ``init``/``train``/``infer`` signatures (as in the LiteRT on-device training guide).

It trains the same classifier on top of the same (frozen) hidden layers as ``runtime.head.adapt``. The
``train`` step is written with explicit gradients (softmax - one-hot, matmuls, resource variables), so it
converts with TFLITE_BUILTINS only (no Flex delegate needed).
"""

from __future__ import annotations

import tempfile

import numpy as np

from metalite.runtime import head as headlib


def _odt_module(spec: headlib.HeadSpec, embedding_dim: int, n_classes: int):
    """The tf.Module behind ``build_odt_model``: frozen hidden layers, a trainable classifier ``w``, ``b``."""
    from metalite.export.tfcompat import tf

    scale = float(spec.adaptation.get("scale", 1.0))
    hidden = [
        (tf.constant(w), tf.constant(b), a) for (w, b), a in zip(spec.weights, spec.activations)
    ]
    d_h = int(spec.weights[-1][0].shape[1]) if spec.weights else int(embedding_dim)
    C = int(n_classes)
    x_spec = tf.TensorSpec([None, int(embedding_dim)], tf.float32, name="x")
    y_spec = tf.TensorSpec([None, C], tf.float32, name="y")

    class ODTHead(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(tf.zeros([d_h, C]), name="w")
            self.b = tf.Variable(tf.zeros([C]), name="b")

        def _hidden(self, x):
            for w, b, a in hidden:
                x = tf.matmul(x, w) + b
                if a == "relu":
                    x = tf.nn.relu(x)
            return x

        def _loss(self, logits, y):
            z = logits - tf.reduce_max(logits, axis=1, keepdims=True)
            logp = z - tf.math.log(tf.reduce_sum(tf.exp(z), axis=1, keepdims=True))
            return -tf.reduce_mean(tf.reduce_sum(y * logp, axis=1)), tf.exp(logp)

        @tf.function(input_signature=[x_spec, y_spec])
        def init(self, x, y):
            h = self._hidden(x)
            protos = tf.matmul(y, h, transpose_a=True) / tf.reshape(
                tf.reduce_sum(y, axis=0), [C, 1]
            )
            self.w.assign(2.0 * scale * tf.transpose(protos))
            self.b.assign(-scale * tf.reduce_sum(protos * protos, axis=1))
            loss, _ = self._loss(tf.matmul(h, self.w) + self.b, y)
            return {"loss": loss}

        @tf.function(input_signature=[x_spec, y_spec, tf.TensorSpec([], tf.float32, name="lr")])
        def train(self, x, y, lr):
            h = self._hidden(x)
            loss, p = self._loss(tf.matmul(h, self.w) + self.b, y)
            g = (p - y) / tf.cast(tf.shape(x)[0], tf.float32)  # d mean-CE / d logits
            self.w.assign_sub(lr * tf.matmul(h, g, transpose_a=True))
            self.b.assign_sub(lr * tf.reduce_sum(g, axis=0))
            return {"loss": loss}

        @tf.function(input_signature=[x_spec])
        def infer(self, x):
            return {"logits": tf.matmul(self._hidden(x), self.w) + self.b}

    return ODTHead()


def build_odt_model(spec: headlib.HeadSpec, embedding_dim: int, n_classes: int) -> bytes:
    """TFLite bytes with signatures ``init(x, y)``, ``train(x, y, lr)`` -> loss, ``infer(x)`` -> logits.

    ``x``: (N, embedding_dim) float32 backbone embeddings; ``y``: (N, n_classes) one-hot. The head's
    hidden layers are frozen constants; the classifier (resource variables ``w``, ``b``) is what trains.
    ``init`` sets the classifier to the prototype classifier (as ``runtime.head.adapt`` does); ``train`` is
    one full-batch gradient-descent step on the mean softmax cross-entropy and returns the loss before it.
    """
    from metalite.export.tfcompat import tf

    m = _odt_module(spec, embedding_dim, n_classes)
    with tempfile.TemporaryDirectory(prefix="metalite-odt-") as d:
        sigs = {
            "init": m.init.get_concrete_function(),
            "train": m.train.get_concrete_function(),
            "infer": m.infer.get_concrete_function(),
        }
        tf.saved_model.save(m, d, signatures=sigs)
        conv = tf.lite.TFLiteConverter.from_saved_model(d, signature_keys=list(sigs))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.experimental_enable_resource_variables = True
        return conv.convert()


class ODTRunner:
    """The ODT model in a TFLite interpreter: ``init``/``train``/``infer`` signature runners."""

    def __init__(self, model: bytes, backend: str | None = None):
        from metalite.runtime.interpreter import get_backend

        be = get_backend(backend)
        self.backend = be.name
        self.interpreter = be.Interpreter(model_content=model)
        self._init = self.interpreter.get_signature_runner("init")
        self._train = self.interpreter.get_signature_runner("train")
        self._infer = self.interpreter.get_signature_runner("infer")

    def init(self, x, y) -> float:
        return float(self._init(x=np.asarray(x, np.float32), y=np.asarray(y, np.float32))["loss"])

    def train(self, x, y, lr: float) -> float:
        return float(
            self._train(
                x=np.asarray(x, np.float32),
                y=np.asarray(y, np.float32),
                lr=np.asarray(lr, np.float32),
            )["loss"]
        )

    def infer(self, x) -> np.ndarray:
        return np.asarray(self._infer(x=np.asarray(x, np.float32))["logits"])
