"""Examples uploaded by devices: idempotent ingestion and a streaming reader.

Each example is keyed by (device, id made on the device): ``INSERT OR IGNORE`` makes a retried upload
a no-op, so a lost answer or a crash between commit and answer never duplicates anything. Its image is
stored once per content as a binary PGM (``P5``; ``P6`` PPM for colour) in the ``images`` table, keyed by
sha256. The rows and images of one upload commit in one transaction: after a crash an upload is there
completely or not at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

import numpy as np

from metalite.common.sqlite import transaction
from metalite.runtime.names import class_name_problem
from metalite.runtime.sync.outbox import KINDS
from metalite.runtime.sync.wire import WireError, decode_image

LABELLED = (
    "correction",
    "support",
)  # the kinds that carry a true label: what a fleet update learns from
MAX_BATCH = 256
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def to_pgm(pixels: bytes, height: int, width: int, channels: int = 1) -> bytes:
    """A binary PGM (gray) or, for ``channels`` = 3, PPM (RGB) file of uint8 pixels (readable by Pillow and
    most image tools)."""
    magic = b"P5" if channels == 1 else b"P6"
    return magic + b"\n%d %d\n255\n" % (width, height) + pixels


def from_pgm(data: bytes) -> np.ndarray:
    """uint8 pixels of a PGM or PPM written by ``to_pgm``: (H, W) gray or (H, W, 3) RGB."""
    magic, size, maxval, pixels = data.split(b"\n", 3)
    width, height = (int(v) for v in size.split())
    channels = {b"P5": 1, b"P6": 3}.get(magic)
    if channels is None or maxval != b"255" or len(pixels) != width * height * channels:
        raise ValueError("not a PGM/PPM written by metalite.fleet")
    px = np.frombuffer(pixels, np.uint8)
    return px.reshape(height, width) if channels == 1 else px.reshape(height, width, 3)


INT64 = (-(1 << 63), (1 << 63) - 1)  # what SQLite stores as an integer
MAX_DEVICE_EXAMPLES = (
    200_000  # per device (quota; docs/fleet.md): beyond it, examples are rejected one by one
)


def _int_in(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _number_in(v, lo: float, hi: float) -> bool:
    return (
        isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
    )  # False for NaN


def label_problem(v) -> str | None:
    """Why ``v`` cannot be an example's label or prediction (None, an int64, or a class name: ``runtime.names``)."""
    if v is None or _int_in(v, *INT64):
        return None
    if isinstance(v, str):
        return class_name_problem(v)
    return "must be a string, an integer in the int64 range or null"


def _check(e) -> tuple:
    """(why the example ``e`` cannot be stored, naming the field, or None; its image): after this, no value of
    ``e`` can fail at bind (range, encoding) and cost the rest of the batch."""
    reason = _field_problem(e)
    if reason is not None:
        return reason, None
    try:
        return None, decode_image(e)
    except WireError as err:
        return str(err), None


def _field_problem(e) -> str | None:
    """Why a field of ``e`` other than its image is unusable, or None."""
    if not isinstance(e, dict):
        return "not an object"
    if not isinstance(e.get("id"), str) or not _ID.match(e["id"]):
        return "id must be 8-64 letters, digits, '_' or '-'"
    if e.get("kind") not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}"
    for key in ("label", "predicted"):
        problem = label_problem(e.get(key))
        if problem:
            return f"{key}: {problem}"
    if e["kind"] == "correction" and e.get("label") is None:
        return "a correction needs a label"
    if e.get("confidence") is not None and not _number_in(e["confidence"], 0.0, 1.0):
        return "confidence must be a number in [0, 1] or null"
    if e.get("version") is not None and not _int_in(e["version"], 0, INT64[1]):
        return "version must be an integer in 0..2**63-1 or null"
    if e.get("created") is not None and not _number_in(e["created"], -1e11, 1e11):
        return "created must be seconds since 1970 (|created| <= 1e11) or null"
    return None


def ingest(root, device_id: int, examples: list, quota: int = MAX_DEVICE_EXAMPLES) -> dict:
    """Store a batch from one device; a malformed example is rejected on its own, the others are stored.

    Returns:
      {"ids": every id the device may now drop (stored, already stored, or rejected), "stored": n,
       "duplicates": n, "rejected": [{"id", "reason"}]}. Examples beyond the device's ``quota`` are rejected.
    """
    now, stored, dup, rejected, ids = time.time(), 0, 0, [], []
    conn = root.db()
    with transaction(conn):
        have = conn.execute("SELECT examples FROM devices WHERE id = ?", (device_id,)).fetchone()[0]
        for e in examples:
            reason, image = _check(e)
            if reason is None and have + stored >= quota:
                reason = f"this device's quota of {quota} stored examples is reached"
            if reason is not None:
                rid = (
                    e["id"]
                    if isinstance(e, dict) and isinstance(e.get("id"), str) and _ID.match(e["id"])
                    else None
                )
                rejected.append({"id": rid, "reason": reason})
                if rid is not None:
                    ids.append(rid)
                continue
            pgm = to_pgm(
                image.tobytes(), image.shape[0], image.shape[1], 1 if image.ndim == 2 else 3
            )
            sha = hashlib.sha256(pgm).hexdigest()
            cur = conn.execute(
                "INSERT OR IGNORE INTO examples (device_id, example_id, kind, label, predicted, confidence, version, "
                "created, received, height, width, image_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    device_id,
                    e["id"],
                    e["kind"],
                    json.dumps(e.get("label")),
                    json.dumps(e.get("predicted")),
                    e.get("confidence"),
                    e.get("version"),
                    e.get("created"),
                    now,
                    e["height"],
                    e["width"],
                    sha,
                ),
            )
            if cur.rowcount:
                conn.execute(
                    "INSERT OR IGNORE INTO images (sha256, data) VALUES (?, ?)", (sha, pgm)
                )
                stored += 1
            else:
                dup += 1
            ids.append(e["id"])
        conn.execute(
            "UPDATE devices SET last_seen = ?, examples = examples + ? WHERE id = ?",
            (now, stored, device_id),
        )
    return {"ids": ids, "stored": stored, "duplicates": dup, "rejected": rejected}


def iter_examples(root, kinds=None, after: int = 0, page: int = 256):
    """Stream stored examples in arrival order, ``page`` rows at a time (never all in memory).

    Args:
      kinds: only these kinds (default all); after: resume after this ``seq`` (the last one handled).
    Yields:
      dicts with seq, device, example_id, kind, label, predicted, confidence, version, created, received,
      image (uint8 (H, W), or (H, W, 3) for colour).
    """
    kinds = tuple(kinds or KINDS)
    marks = ",".join("?" * len(kinds))
    conn = root.db()
    while True:
        rows = conn.execute(
            "SELECT e.seq, d.name AS device, e.example_id, e.kind, e.label, e.predicted, e.confidence, e.version, "
            "e.created, e.received, i.data FROM examples e JOIN devices d ON d.id = e.device_id "
            f"JOIN images i ON i.sha256 = e.image_sha256 WHERE e.seq > ? AND e.kind IN ({marks}) "
            "ORDER BY e.seq LIMIT ?",
            (after, *kinds, page),
        ).fetchall()
        if not rows:
            return
        for r in rows:
            d = dict(r)
            d["label"], d["predicted"] = json.loads(d["label"]), json.loads(d["predicted"])
            d["image"] = from_pgm(d.pop("data"))
            yield d
        after = rows[-1]["seq"]


def counts(root) -> dict:
    """{kind: number of stored examples}."""
    return {
        r[0]: r[1] for r in root.db().execute("SELECT kind, count(*) FROM examples GROUP BY kind")
    }


def newest_seq(root) -> int:
    """The ``seq`` of the newest stored example, 0 when there is none (an update takes examples up to it)."""
    return int(root.db().execute("SELECT coalesce(max(seq), 0) FROM examples").fetchone()[0])


def labelled_since(root, seq: int) -> int:
    """How many labelled examples (``LABELLED`` kinds) arrived after ``seq``."""
    marks = ",".join("?" * len(LABELLED))
    return int(
        root.db()
        .execute(
            f"SELECT count(*) FROM examples WHERE seq > ? AND kind IN ({marks})", (seq, *LABELLED)
        )
        .fetchone()[0]
    )
