"""``ReportingClassifier``: a ``FewShotClassifier`` that keeps what it was unsure of, and corrections, in an outbox.

The design's "should the model be updated?": a prediction whose top probability is below ``threshold``
goes to the outbox with its image (queued for the outbox's background writer, so ``predict`` does not
wait for a commit); ``correct(image, label)`` records a user's correction, committed before it returns
(and, by default, learns from it). ``metalite.runtime.sync.sync`` uploads the outbox when the server is reachable.
"""
from __future__ import annotations

import sqlite3
import warnings

import numpy as np

from ..classifier import FewShotClassifier
from ..images import as_model_input


class ReportingClassifier(FewShotClassifier):
    """A few-shot classifier feeding an ``Outbox``.

    Args:
      bundle_dir: as for ``FewShotClassifier``.
      outbox: an ``Outbox``, or None to record nothing.
      threshold: predictions with top probability below this are recorded (default 0.6).
      version: the bundle version (recorded with each example; ``DeviceHome`` sets it).
      **kwargs: as for ``FewShotClassifier``.

    Attributes:
      outbox_errors: examples that could not be recorded (disk full, ...); predict never fails for them.
    """

    def __init__(self, bundle_dir, outbox=None, threshold: float = 0.6, version: int | None = None, **kwargs):
        super().__init__(bundle_dir, **kwargs)
        self.outbox, self.threshold, self.version = outbox, float(threshold), version
        self.outbox_errors = 0

    def _record(self, kind: str, x: np.ndarray, rows, labels, predicted, confidences, wait: bool) -> None:
        try:
            self.outbox.add(kind, self._pixels(x[rows]), labels, predicted, confidences, self.version, wait=wait)
        except (sqlite3.Error, OSError) as e:
            first = self.outbox_errors == 0
            self.outbox_errors += len(rows)
            if first:
                warnings.warn(f"outbox: cannot record examples ({e}); predictions go on", RuntimeWarning)

    def _keep_unsure(self, x: np.ndarray, confidence: np.ndarray, best: np.ndarray) -> None:
        low = np.flatnonzero(confidence < self.threshold)
        if low.size:
            self._record("unsure", x, low, None, [self._classes[k] for k in best[low]], confidence[low], wait=False)

    def predict_proba(self, images, transductive: bool = False) -> np.ndarray:
        """As ``FewShotClassifier.predict_proba``; rows below ``threshold`` go to the outbox as ``unsure``."""
        x = as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
        emb = self._embed_input(x)
        proba = self._head_for("predict_proba", emb, transductive).predict_proba(emb).astype(np.float32)
        if self.outbox is not None:
            self._keep_unsure(x, proba.max(axis=1), proba.argmax(axis=1))
        return proba

    def predict(self, images, transductive: bool = False) -> list:
        """As ``FewShotClassifier.predict``; unsure predictions go to the outbox."""
        x = as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
        emb = self._embed_input(x)
        logits = self._head_for("predict", emb, transductive).logits(emb)
        best = logits.argmax(axis=1)
        if self.outbox is not None and self.threshold > 0:
            # top softmax probability = 1 / sum(exp(logits - max)): below threshold <=> that sum above 1 / threshold
            total = np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)
            if (total > 1.0 / self.threshold).any():
                self._keep_unsure(x, 1.0 / total, best)
        return [self._classes[k] for k in best]

    def correct(self, images, label, learn: bool = True) -> "ReportingClassifier":
        """Record that ``images`` show ``label`` (a user's correction) and, if ``learn``, add them to its class.

        Args:
          images: one image or several (any form ``embed`` takes).
          label: the right label (str or int).
          learn: also ``add_class(label, images)`` so the device stops making this mistake.
        Returns:
          self.
        """
        x = as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
        predicted = confidences = None
        if self.head is not None:
            proba = self.head.predict_proba(self._embed_input(x))
            predicted = [self._classes[k] for k in proba.argmax(axis=1)]
            confidences = proba.max(axis=1)
        if self.outbox is not None:
            self._record("correction", x, np.arange(len(x)), [label] * len(x), predicted, confidences, wait=True)
        if learn:
            self.add_class(label, self._pixels(x))
        return self
