"""The device's outbox: a bounded, persisted queue of examples for the fleet server (SQLite, WAL).

What goes in: predictions below the confidence threshold (``kind="unsure"``), images the classifier
refused as none of its classes (``kind="unknown"``, with the nearest class as ``predicted``), user corrections
(``kind="correction"``, with the right label) and the device's support images (``kind="support"``,
``add_support``: what the back end fine-tunes on), each with its image as uint8 gray pixels at the
bundle's input size. Every row gets an id made here (random per opening + a counter, 32 hex digits) that
the upload carries, so a retried
upload never duplicates an example on the server, and a row leaves the outbox only once the server has
acknowledged its id. When more than ``capacity`` rows wait, the oldest ``unsure`` and ``unknown`` rows go first, then
the oldest of any kind; ``dropped`` counts them.

Two ways in. ``add(..., wait=True)`` commits before it returns (corrections). ``add(..., wait=False)``
queues the rows for a background thread that commits whatever is queued in one transaction (unsure
predictions: ~6 us per row instead of ~60 us for a commit each, off the predicting thread; it gathers
rows for ``BATCH_WAIT`` = 50 ms before each commit). Queued rows reach the database within ~50 ms, and at the latest with the next ``wait=True`` add, ``flush()``,
``pending()``/``oldest()``, ``close()`` or interpreter exit; a hard kill in that moment can lose them.

Durability of committed rows: WAL with ``synchronous=NORMAL``; a crash or kill of the process loses
nothing, a power cut may lose the last commits. ``durable=True`` (``synchronous=FULL``) fsyncs each commit.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import sqlite3
import threading
import time
import uuid
import warnings
import weakref
from pathlib import Path

import numpy as np

from metalite.common.sqlite import transaction

KINDS = ("unsure", "unknown", "correction", "support")
FIRST_DROPPED = ("unsure", "unknown")  # what goes first when the outbox is full
BATCH_WAIT = 0.05  # seconds the background writer gathers rows before a commit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  label TEXT, predicted TEXT, confidence REAL, version INTEGER,
  created REAL NOT NULL,
  height INTEGER NOT NULL, width INTEGER NOT NULL, pixels BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS shared (id TEXT PRIMARY KEY);
"""


def _json_or_none(v):
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    return json.dumps(v)


def _support_id(label, img: np.ndarray) -> str:
    """A support image's outbox id, from its label and pixels: the same image is queued once."""
    return (
        "s" + hashlib.sha256(_json_or_none(label).encode() + b"\0" + img.tobytes()).hexdigest()[:40]
    )


_OPEN: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _flush_open_outboxes() -> None:
    for ob in list(_OPEN):
        try:
            ob.flush()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


def _image_batch(px: np.ndarray) -> bool:
    """Gray (n, H, W) or RGB (n, H, W, 3) pixels; a row keeps height and width, its bytes say which."""
    return px.ndim == 3 or (px.ndim == 4 and px.shape[-1] == 3)


class Outbox:
    """Examples waiting for upload, in an SQLite file.

    Args:
      path: the database file (created with its directory if missing).
      capacity: most rows kept (default 1000; about 1 KB each for 28x28 images).
      durable: fsync every commit (slower; see the module docstring).

    Attributes:
      write_errors: queued rows the background writer could not store (disk full, ...).
    """

    writable = True

    def __init__(self, path, capacity: int = 1000, durable: bool = False):
        self.path = Path(path)
        self.capacity = max(1, int(capacity))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the connection
        self._cv = threading.Condition()  # the queue
        self._queue: list = []
        self._busy = self._closed = False
        self._writer: threading.Thread | None = None
        self.write_errors = 0
        self._prefix, self._count = (
            uuid.uuid4().hex[:22],
            0,
        )  # ids: random per opening + a counter (cheap, unique)
        self._db = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        _OPEN.add(self)

    def add(
        self,
        kind: str,
        pixels: np.ndarray,
        labels=None,
        predicted=None,
        confidences=None,
        version: int | None = None,
        wait: bool = True,
    ) -> list:
        """Queue examples; with ``wait`` they (and everything queued before) are committed on return.

        Args:
          kind: one of ``KINDS`` (``"support"`` rows come through ``add_support``).
          pixels: uint8 (n, H, W) gray images (255 = paper), or (n, H, W, 3) RGB from an RGB bundle.
          labels, predicted: per-image true label (corrections) and predicted label, or None.
          confidences: per-image confidence of ``predicted``, or None.
          version: the bundle version that made the prediction.
          wait: commit now (True) or leave it to the background writer (False).
        Returns:
          the new rows' ids.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        px = np.ascontiguousarray(pixels, np.uint8)
        if not _image_batch(px):
            raise ValueError(f"pixels must be (n, H, W) or (n, H, W, 3), got shape {px.shape}")
        n, h, w, now = len(px), px.shape[1], px.shape[2], time.time()
        labels = [None] * n if labels is None else list(labels)
        predicted = [None] * n if predicted is None else list(predicted)
        confidences = [None] * n if confidences is None else [float(c) for c in confidences]
        data = [
            (_json_or_none(labels[i]), _json_or_none(predicted[i]), confidences[i], px[i].tobytes())
            for i in range(n)
        ]
        with self._cv:
            if self._closed:
                raise sqlite3.ProgrammingError(f"{self.path}: the outbox is closed")
            ids = [f"{self._prefix}{self._count + i:010x}" for i in range(n)]
            self._count += n
            rows = [
                (ids[i], kind, lab, pred, conf, version, now, h, w, pix)
                for i, (lab, pred, conf, pix) in enumerate(data)
            ]
            if not wait:
                self._queue.extend(rows)
                self._cv.notify()
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_queued, name="metalite-outbox", daemon=True
                    )
                    self._writer.start()
                return ids
        with (
            self._lock
        ):  # the writer takes and commits its batch under this lock too: the order is kept
            with self._cv:
                rows, self._queue = self._queue + rows, []
            self._insert(rows)
        return ids

    def add_support(self, pixels: np.ndarray, labels: list, version: int | None = None) -> int:
        """Queue support images not queued before (committed on return); returns how many were new.

        Their ids come from the content (label + pixels), and the ``shared`` table remembers every id
        queued: a support set is sent once however often the device syncs, and re-sent images are
        duplicates the server ignores.
        """
        px = np.ascontiguousarray(pixels, np.uint8)
        if not _image_batch(px) or len(px) != len(labels):
            raise ValueError(
                f"pixels must be (n, H, W) or (n, H, W, 3) with one label each, got {px.shape} and "
                f"{len(labels)} labels"
            )
        now, rows = time.time(), []
        for img, lab in zip(px, labels):
            label, rid = _json_or_none(lab), _support_id(lab, img)
            rows.append(
                (
                    rid,
                    "support",
                    label,
                    None,
                    None,
                    version,
                    now,
                    img.shape[0],
                    img.shape[1],
                    img.tobytes(),
                )
            )
        self.flush()
        with self._lock, transaction(self._db):
            new = [
                r
                for r in rows
                if self._db.execute("INSERT OR IGNORE INTO shared VALUES (?)", (r[0],)).rowcount
            ]
            self._db.executemany(
                "INSERT OR IGNORE INTO examples (id, kind, label, predicted, confidence, version, "
                "created, height, width, pixels) VALUES (?,?,?,?,?,?,?,?,?,?)",
                new,
            )
            self._trim()
        return len(new)

    def mark_shared(self, pixels: np.ndarray, labels: list) -> None:
        """Remember support images as sent, so ``add_support`` never queues them: a class pulled from the
        fleet's library is on the server already, sent by the device that taught it."""
        ids = [
            (_support_id(lab, img),)
            for img, lab in zip(np.ascontiguousarray(pixels, np.uint8), labels)
        ]
        self.flush()
        with self._lock, transaction(self._db):
            self._db.executemany("INSERT OR IGNORE INTO shared VALUES (?)", ids)

    def _insert(self, rows: list) -> None:
        """Commit ``rows`` in one transaction; call with ``self._lock`` held."""
        with transaction(self._db):
            self._db.executemany(
                "INSERT INTO examples (id, kind, label, predicted, confidence, version, created, "
                "height, width, pixels) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self._trim()

    def _write_queued(self) -> None:
        """The background writer: commit whatever is queued, until closed and drained."""
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                self._busy = True
            time.sleep(BATCH_WAIT)  # let the rows of the next few predictions join this commit
            batch = []
            try:
                with self._lock:
                    with self._cv:
                        batch, self._queue = self._queue, []
                    if batch:  # (a wait=True add may have committed them meanwhile)
                        self._insert(batch)
            except (sqlite3.Error, OSError) as e:
                first = self.write_errors == 0
                self.write_errors += len(batch)
                if first:
                    warnings.warn(
                        f"outbox {self.path}: cannot store examples ({e})", RuntimeWarning
                    )
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self) -> None:
        """Wait until every queued row is committed."""
        with self._cv:
            while self._queue or self._busy:
                self._cv.wait()

    def _trim(self) -> None:
        span = self._db.execute(
            "SELECT coalesce(max(seq) - min(seq) + 1, 0) FROM examples"
        ).fetchone()[0]
        if span <= self.capacity:  # count(*) <= span: nothing to trim, and no full count needed
            return
        excess = self._db.execute("SELECT count(*) FROM examples").fetchone()[0] - self.capacity
        dropped = 0
        for where in (f"WHERE kind IN ({', '.join(repr(k) for k in FIRST_DROPPED)})", ""):
            if excess - dropped <= 0:
                break
            cur = self._db.execute(
                f"DELETE FROM examples WHERE seq IN (SELECT seq FROM examples {where} "
                "ORDER BY seq LIMIT ?)",
                (excess - dropped,),
            )
            dropped += cur.rowcount
        if dropped:
            self._db.execute(
                "INSERT INTO counters VALUES ('dropped', ?) ON CONFLICT(name) "
                "DO UPDATE SET value = value + excluded.value",
                (dropped,),
            )

    def pending(self) -> int:
        """Number of examples waiting for upload (queued ones are committed first)."""
        self.flush()
        with self._lock:
            return self._db.execute("SELECT count(*) FROM examples").fetchone()[0]

    def kinds(self) -> dict:
        """{kind: examples waiting} (queued ones are committed first)."""
        self.flush()
        with self._lock:
            return dict(
                self._db.execute("SELECT kind, count(*) FROM examples GROUP BY kind").fetchall()
            )

    @property
    def dropped(self) -> int:
        """Examples discarded because the outbox was full, since it was created."""
        self.flush()
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()
        return int(row[0]) if row else 0

    def oldest(self, n: int) -> list:
        """The ``n`` oldest examples as dicts (id, kind, label, predicted, confidence, version, created,
        height, width, pixels: bytes); queued ones are committed first."""
        self.flush()
        with self._lock:
            cur = self._db.execute(
                "SELECT id, kind, label, predicted, confidence, version, created, height, width, "
                "pixels FROM examples ORDER BY seq LIMIT ?",
                (int(n),),
            )
            rows = cur.fetchall()
        keys = (
            "id",
            "kind",
            "label",
            "predicted",
            "confidence",
            "version",
            "created",
            "height",
            "width",
            "pixels",
        )
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
        with self._lock, transaction(self._db):
            n = sum(
                self._db.execute("DELETE FROM examples WHERE id = ?", (i,)).rowcount for i in ids
            )
        return n

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the database (further adds fail)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
        if self._writer is not None:
            self._writer.join()
        with self._lock:
            self._db.close()
        _OPEN.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class OutboxUnavailableWarning(RuntimeWarning):
    """The outbox cannot be opened for writing (read-only or full SD card): predictions go on, nothing is recorded."""


class UnavailableOutbox:
    """Stands in for an ``Outbox`` that cannot be opened: nothing is recorded, nothing waits; ``reason`` says why."""

    writable = False
    capacity = 0
    write_errors = 0
    dropped = 0

    def __init__(self, path, reason: str):
        self.path, self.reason = Path(path), reason

    def add(self, *args, **kwargs) -> list:
        raise OSError(f"outbox {self.path} is unavailable ({self.reason})")

    add_support = mark_shared = add

    def pending(self) -> int:
        return 0

    def kinds(self) -> dict:
        return {}

    def oldest(self, n: int) -> list:
        return []

    def remove(self, ids) -> int:
        return 0

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
