"""``ReportingClassifier``: a ``FewShotClassifier`` that keeps what it was unsure of, and corrections, in an outbox.

The design's "should the model be updated?": a prediction whose top probability is below ``threshold``
goes to the outbox with its image as ``unsure``; with ``unknown`` on, an image ``predict`` refuses as none of
the learned classes goes as ``unknown`` instead (what the fleet keeps meeting, not what it mixes up) (queued for the outbox's background writer, so ``predict`` does not
wait for a commit); ``correct(image, label)`` records a user's correction, committed before it returns
(and, by default, learns from it). ``metalite.runtime.sync.sync`` uploads the outbox when the server is reachable.
"""

from __future__ import annotations

import sqlite3
import warnings

import numpy as np

from ..classifier import FewShotClassifier
from ..images import as_model_input
from ..openset import UNKNOWN


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

    def __init__(
        self, bundle_dir, outbox=None, threshold: float = 0.6, version: int | None = None, **kwargs
    ):
        super().__init__(bundle_dir, **kwargs)
        self.outbox, self.threshold, self.version = outbox, float(threshold), version
        self.outbox_errors = 0

    def _record(
        self, kind: str, x: np.ndarray, rows, labels, predicted, confidences, wait: bool
    ) -> None:
        try:
            self.outbox.add(
                kind, self._pixels(x[rows]), labels, predicted, confidences, self.version, wait=wait
            )
        except (sqlite3.Error, OSError) as e:
            first = self.outbox_errors == 0
            self.outbox_errors += len(rows)
            if first:
                warnings.warn(
                    f"outbox: cannot record examples ({e}); predictions go on", RuntimeWarning
                )

    def _keep_unsure(
        self, x: np.ndarray, confidence: np.ndarray, best: np.ndarray, refused=None
    ) -> None:
        refused = np.zeros(len(x), bool) if refused is None else refused
        for kind, rows in (
            ("unsure", np.flatnonzero((confidence < self.threshold) & ~refused)),
            ("unknown", np.flatnonzero(refused)),
        ):
            if rows.size:
                self._record(
                    kind,
                    x,
                    rows,
                    None,
                    [self._classes[k] for k in best[rows]],
                    confidence[rows],
                    wait=False,
                )

    def predict_proba(self, images, transductive: bool = False) -> np.ndarray:
        """As ``FewShotClassifier.predict_proba`` (same numbers); rows below ``threshold`` go to the outbox as
        ``unsure``, images the open-set rule refuses as ``unknown``."""
        x = as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
        emb = self._embed_input(x)
        proba = (
            self._head_for("predict_proba", emb, transductive).predict_proba(emb).astype(np.float32)
        )
        if self.outbox is not None:
            self._keep_unsure(x, proba.max(axis=1), proba.argmax(axis=1), self._refused(emb))
        return proba

    def predict(self, images, transductive: bool = False) -> list:
        """As ``FewShotClassifier.predict``; unsure predictions go to the outbox, refused images as ``unknown``."""
        x = as_model_input(images, self.bundle.input_shape, self.bundle.preprocess)
        emb = self._embed_input(x)
        logits = self._head_for("predict", emb, transductive).logits(emb)
        best = logits.argmax(axis=1)
        refused = self._refused(emb)
        if self.outbox is not None and (self.threshold > 0 or refused.any()):
            # top softmax probability = 1 / sum(exp(logits - max)): below threshold <=> that sum above 1 / threshold
            total = np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1)
            if refused.any() or (self.threshold > 0 and (total > 1.0 / self.threshold).any()):
                self._keep_unsure(x, 1.0 / total, best, refused)
        return [UNKNOWN if r else self._classes[k] for k, r in zip(best, refused)]

    def correct(self, images, label, learn: bool = True) -> ReportingClassifier:
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
            self._record(
                "correction",
                x,
                np.arange(len(x)),
                [label] * len(x),
                predicted,
                confidences,
                wait=True,
            )
        if learn:
            self.add_class(label, self._pixels(x))
        return self
