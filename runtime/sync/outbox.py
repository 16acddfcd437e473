"""The device's outbox: a bounded, persisted queue of examples for the fleet server (SQLite, WAL).

What goes in: predictions below the confidence threshold (``kind="unsure"``) and user corrections
(``kind="correction"``, with the right label), each with its image as uint8 gray pixels at the
bundle's input size. Every row gets an id made here (uuid4 hex) that the upload carries, so a retried
upload never duplicates an example on the server, and a row leaves the outbox only once the server has
acknowledged its id. When more than ``capacity`` rows wait, the oldest ``unsure`` rows go first, then
the oldest of any kind; ``dropped`` counts them.

Durability: WAL with ``synchronous=NORMAL`` by default; a crash or kill of the process loses nothing,
a power cut may lose the last commits. ``durable=True`` (``synchronous=FULL``) fsyncs every commit.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import numpy as np

KINDS = ("unsure", "correction")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  label TEXT, predicted TEXT, confidence REAL, version INTEGER,
  created REAL NOT NULL,
  height INTEGER NOT NULL, width INTEGER NOT NULL, pixels BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _json_or_none(v):
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    return json.dumps(v)


class Outbox:
    """Examples waiting for upload, in an SQLite file.

    Args:
      path: the database file (created with its directory if missing).
      capacity: most rows kept (default 1000; about 1 KB each for 28x28 images).
      durable: fsync every commit (slower; see the module docstring).
    """

    def __init__(self, path, capacity: int = 1000, durable: bool = False):
        self.path = Path(path)
        self.capacity = max(1, int(capacity))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)

    def add(self, kind: str, pixels: np.ndarray, labels=None, predicted=None, confidences=None,
            version: int | None = None) -> list:
        """Queue examples in one transaction; returns their ids.

        Args:
          kind: ``"unsure"`` or ``"correction"``.
          pixels: uint8 (n, H, W) gray images (255 = paper).
          labels, predicted: per-image true label (corrections) and predicted label, or None.
          confidences: per-image confidence of ``predicted``, or None.
          version: the bundle version that made the prediction.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        px = np.ascontiguousarray(pixels, np.uint8)
        if px.ndim != 3:
            raise ValueError(f"pixels must be (n, H, W), got shape {px.shape}")
        n = len(px)
        labels = [None] * n if labels is None else list(labels)
        predicted = [None] * n if predicted is None else list(predicted)
        confidences = [None] * n if confidences is None else [float(c) for c in confidences]
        now, ids = time.time(), [uuid.uuid4().hex for _ in range(n)]
        rows = [(ids[i], kind, _json_or_none(labels[i]), _json_or_none(predicted[i]), confidences[i], version, now,
                 px.shape[1], px.shape[2], px[i].tobytes()) for i in range(n)]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO examples (id, kind, label, predicted, confidence, version, created, "
                                     "height, width, pixels) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
                self._trim()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

    def _trim(self) -> None:
        excess = self._db.execute("SELECT count(*) FROM examples").fetchone()[0] - self.capacity
        dropped = 0
        for where in ("WHERE kind = 'unsure'", ""):
            if excess - dropped <= 0:
                break
            cur = self._db.execute(f"DELETE FROM examples WHERE seq IN (SELECT seq FROM examples {where} "
                                   "ORDER BY seq LIMIT ?)", (excess - dropped,))
            dropped += cur.rowcount
        if dropped:
            self._db.execute("INSERT INTO counters VALUES ('dropped', ?) ON CONFLICT(name) "
                             "DO UPDATE SET value = value + excluded.value", (dropped,))

    def pending(self) -> int:
        """Number of examples waiting for upload."""
        with self._lock:
            return self._db.execute("SELECT count(*) FROM examples").fetchone()[0]

    @property
    def dropped(self) -> int:
        """Examples discarded because the outbox was full, since it was created."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def oldest(self, n: int) -> list:
        """The ``n`` oldest examples as dicts (id, kind, label, predicted, confidence, version, created,
        height, width, pixels: bytes)."""
        with self._lock:
            cur = self._db.execute("SELECT id, kind, label, predicted, confidence, version, created, height, width, "
                                   "pixels FROM examples ORDER BY seq LIMIT ?", (int(n),))
            rows = cur.fetchall()
        keys = ("id", "kind", "label", "predicted", "confidence", "version", "created", "height", "width", "pixels")
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["label"] = None if d["label"] is None else json.loads(d["label"])
            d["predicted"] = None if d["predicted"] is None else json.loads(d["predicted"])
            out.append(d)
        return out

    def remove(self, ids) -> int:
        """Delete the examples with these ids (acknowledged by the server); returns how many were deleted."""
        ids = list(ids)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = sum(self._db.execute("DELETE FROM examples WHERE id = ?", (i,)).rowcount for i in ids)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return n

    def close(self) -> None:
        """Close the database (further calls fail)."""
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
