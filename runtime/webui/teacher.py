"""``Teacher``: what the device page does to a device home (teach, recognize, correct, rename, remove), one
request at a time.

Every change is made on the classifier in memory and then saved with ``DeviceHome.save`` (an atomic
replace of ``state.npz`` under the home's lock), so a power cut leaves the old state or the new one. If
the save fails, the classifier is opened again from the home, so memory never runs ahead of the disk.
Recognized images are kept (as the model's 28x28 input pixels, a few hundred bytes each) for the last
``RECENT`` answers, so a correction names an answer instead of uploading the image again.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections import OrderedDict

import numpy as np

from ..errors import InputError, UnknownClassError
from ..images import DRAFT_FACTOR, as_model_input, read_image_bytes
from ..interpreter import describe
from ..labels import normalize_label, short_repr
from ..preprocess import to_pixels

RECENT = 64  # recognized images kept for a correction
THUMBNAILS = 4  # support images shown per class
TOP = 3  # classes in an answer


class Teacher:
    """The device page's operations over a ``DeviceHome``; thread-safe (one operation at a time).

    Args:
      home: a ``metalite.runtime.sync.DeviceHome`` with a bundle installed.
      delegate, num_threads: as for ``FewShotClassifier``.
    """

    def __init__(self, home, delegate: str = "auto", num_threads: int | None = None):
        self.home, self._opts = home, dict(delegate=delegate, num_threads=num_threads)
        self._lock = threading.Lock()
        self._recent: OrderedDict = OrderedDict()
        self._ids = itertools.count(1)
        self.clf = home.classifier(**self._opts)

    # ------------------------------------------------------------------ helpers
    def _current(self):
        """The classifier, opened again if a sync switched the home to another version meanwhile."""
        if self.home.version != self.clf.version:
            self.clf = self.home.classifier(**self._opts)
            self._recent.clear()
        return self.clf

    def _pixels(self, data: bytes, name: str) -> np.ndarray:
        """Encoded image bytes -> uint8 (1, H, W) model-size pixels (255 = paper); InputError if unusable."""
        b = self.clf.bundle
        size = (DRAFT_FACTOR * b.input_shape[0], DRAFT_FACTOR * b.input_shape[1])
        x = as_model_input(read_image_bytes(data, name, size), b.input_shape, b.preprocess)
        return to_pixels(
            x, bool(b.preprocess.get("invert", True)), b.preprocess.get("range", (0.0, 1.0))
        )

    def _change(self, apply) -> None:
        """Run ``apply(clf)`` and save the state; on any failure reopen the classifier from the saved state."""
        clf = self._current()
        try:
            apply(clf)
            if clf.head is None:  # the last class was removed: no state to keep
                with self.home.lock():
                    self.home.state_path().unlink(missing_ok=True)
            else:
                self.home.save(clf)
        except BaseException:
            self.clf = self.home.classifier(**self._opts)
            raise

    # ------------------------------------------------------------------ reading
    def status(self) -> dict:
        """Bundle version, measured accuracy, how the backbone runs, the classes (counts, thumbnails), outbox."""
        with self._lock:
            clf = self._current()
            m = clf.bundle.manifest
            images, embedded = clf.support_images(), clf.support_embeddings()
            classes = []
            for label in clf.classes:
                kept, n = images.get(label), len(embedded[label])
                thumbs = (
                    []
                    if kept is None
                    else [base64.b64encode(p.tobytes()).decode() for p in kept[-THUMBNAILS:]]
                )
                classes.append({"label": label, "count": n, "thumbnails": thumbs})
            h, w = clf.bundle.input_shape[:2]
            return {
                "version": clf.version,
                "created": m.get("created"),
                "metalite_version": m.get("metalite_version"),
                "accuracy": _accuracy_lines(m.get("accuracy") or {}),
                "acceleration": describe(clf.acceleration),
                "backbone": _backbone_line(clf.acceleration),
                "interpreter": clf.acceleration.interpreter,
                "delegate": clf.acceleration.delegate,
                "device": clf.device,
                "thumbnail_size": [h, w],
                "classes": classes,
                "outbox": self.home.outbox().pending(),
            }

    # ------------------------------------------------------------------ operations
    def teach(self, label, images: list) -> dict:
        """Add ``images`` (encoded bytes, named ``(name, data)``) to class ``label``, new or existing."""
        label = _label(label)
        if not images:
            raise InputError("no images to teach")
        with self._lock:
            self._current()
            pixels = np.concatenate([self._pixels(data, name) for name, data in images])
            self._change(lambda clf: clf.add_class(label, pixels))
            return {"label": label, "added": len(pixels), "classes": len(self.clf.classes)}

    def recognize(self, name: str, data: bytes) -> dict:
        """Classify one image: the top classes with confidences, the time it took and an id for ``correct``."""
        with self._lock:
            clf = self._current()
            start = time.perf_counter()
            pixels = self._pixels(data, name)
            if clf.head is None:
                raise InputError("nothing learned yet: teach a class first")
            proba = clf.predict_proba(pixels)[0]
            ms = (time.perf_counter() - start) * 1000.0
            order = np.argsort(-proba)[:TOP]
            answer_id = next(self._ids)
            self._recent[answer_id] = pixels
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
            return {
                "id": answer_id,
                "ms": round(ms, 2),
                "thumbnail": base64.b64encode(pixels.tobytes()).decode(),
                "top": [
                    {"label": clf.classes[k], "confidence": round(float(proba[k]), 4)}
                    for k in order
                ],
            }

    def correct(self, answer_id, label) -> dict:
        """Record that answer ``answer_id`` shows ``label`` (to the outbox as a correction) and learn it."""
        label = _label(label)
        with self._lock:
            self._current()
            pixels = self._recent.get(answer_id) if isinstance(answer_id, int) else None
            if pixels is None:
                raise InputError(
                    f"no recent answer {str(answer_id)[:20]}: recognize the image again"
                )
            self._change(lambda clf: clf.correct(pixels, label))
            del self._recent[answer_id]
            return {"label": label, "outbox": self.home.outbox().pending()}

    def rename(self, label, new_label) -> dict:
        """Rename a class."""
        label, new_label = _label(label), _label(new_label)
        with self._lock:
            self._change(lambda clf: clf.rename_class(label, new_label))
            return {"label": new_label}

    def remove(self, label) -> dict:
        """Forget a class."""
        label = _label(label)
        with self._lock:
            if label not in self._current().classes:
                raise UnknownClassError(f"unknown class {short_repr(label)}")
            self._change(lambda clf: clf.remove_class(label))
            return {"removed": label, "classes": len(self.clf.classes)}

    def classify_file(self, path) -> dict:
        """Classify one image file for the watch mode: {label, confidence, top} (InputError if unusable)."""
        with self._lock:
            clf = self._current()
            if clf.head is None:
                raise InputError("nothing learned yet: teach a class first")
            proba = clf.predict_proba([str(path)])[0]
            order = np.argsort(-proba)[:TOP]
            top = [
                {"label": clf.classes[k], "confidence": round(float(proba[k]), 4)} for k in order
            ]
            return {
                "label": top[0]["label"],
                "confidence": top[0]["confidence"],
                "top": top,
                "version": clf.version,
            }


def _label(value):
    """A class label from the page: a non-empty str (stripped, at most 100 characters) or an int."""
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise InputError("the class name is empty")
        if len(value) > 100:
            raise InputError("the class name is longer than 100 characters")
    return normalize_label(value)


def _backbone_line(acc) -> str:
    """How the backbone runs, short: "ai_edge_litert 2.3.0 on the CPU, XNNPACK delegate (whole graph)"."""
    where = "the Edge TPU" if acc.device == "edgetpu" else "the CPU"
    name = {"xnnpack": "XNNPACK", "edgetpu": "Edge TPU"}.get(acc.delegate, acc.delegate)
    how = "no delegate" if acc.delegate == "none" else f"{name} delegate ({acc.delegated})"
    return f"backbone: {acc.interpreter} {acc.version or ''} on {where}, {how}".replace("  ", " ")


def _accuracy_lines(acc: dict) -> list:
    """The manifest's measured accuracies as short lines, those of the int8 model first
    ("int8_20way1shot: 93.7% ± 0.3 (held-out test classes)", "int8_lake: 6.98% error ± 0.54, 400 runs")."""
    lines = []
    for key in sorted(acc, key=lambda k: not k.startswith("int8")):
        r = acc[key]
        if not isinstance(r, dict):
            continue
        if isinstance(r.get("error"), (int, float)):
            lines.append(
                f"{key}: {100 * r['error']:.2f}% error ± {100 * r.get('ci95', 0):.2f}, {r.get('runs', '?')} runs"
            )
        elif isinstance(r.get("mean"), (int, float)):
            data = str(r.get("data", ""))
            where = data[data.rfind("(") + 1 :].rstrip(")") if "(" in data else data
            lines.append(f"{key}: {100 * r['mean']:.1f}% ± {100 * r.get('ci95', 0):.1f} ({where})")
    return lines
