"""Examples uploaded by devices: idempotent ingestion and a streaming reader.

Each example is keyed by (device, id made on the device): ``INSERT OR IGNORE`` makes a retried upload
a no-op, so a lost answer or a crash between commit and answer never duplicates anything. Its image is
stored once per content as a binary PGM (``P5``; ``P6`` PPM for colour) in the ``images`` table, keyed by
sha256. The rows and images of one upload commit in one transaction: after a crash an upload is there
completely or not at all.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time

import numpy as np

from metalite.runtime.sync.outbox import KINDS

from .db import transaction

MAX_BATCH = 256
MAX_SIDE = 512
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


def _label(v):
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return True
    return isinstance(v, str) and len(v) <= 200


def _check(e) -> str | None:
    """Why the example ``e`` cannot be stored, or None if it is fine."""
    if not isinstance(e, dict):
        return "not an object"
    if not isinstance(e.get("id"), str) or not _ID.match(e["id"]):
        return "id must be 8-64 letters, digits, '_' or '-'"
    if e.get("kind") not in KINDS:
        return f"kind must be one of {', '.join(KINDS)}"
    if not (_label(e.get("label")) and _label(e.get("predicted"))):
        return "label and predicted must be a string (<= 200 chars), an integer or null"
    if e["kind"] == "correction" and e.get("label") is None:
        return "a correction needs a label"
    conf = e.get("confidence")
    if conf is not None and not (isinstance(conf, (int, float)) and 0.0 <= conf <= 1.0):
        return "confidence must be in [0, 1] or null"
    h, w = e.get("height"), e.get("width")
    if not all(isinstance(v, int) and 1 <= v <= MAX_SIDE for v in (h, w)):
        return f"height and width must be integers in 1..{MAX_SIDE}"
    try:
        px = base64.b64decode(e.get("pixels") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        return "pixels must be base64"
    c = e.get("channels", 1)
    if c not in (1, 3) or isinstance(c, bool):
        return "channels must be 1 (gray) or 3 (RGB)"
    if len(px) != h * w * c:
        return f"pixels hold {len(px)} bytes, expected height*width*channels = {h * w * c}"
    return None


def _num(v, kind):
    return v if isinstance(v, kind) and not isinstance(v, bool) else None


def ingest(root, device_id: int, examples: list) -> dict:
    """Store a batch from one device.

    Returns:
      {"ids": every id the device may now drop (stored, already stored, or rejected), "stored": n,
       "duplicates": n, "rejected": [{"id", "reason"}]}.
    """
    now, stored, dup, rejected, ids = time.time(), 0, 0, [], []
    conn = root.db()
    with transaction(conn):
        for e in examples:
            reason = _check(e)
            if reason is not None:
                rid = e.get("id") if isinstance(e, dict) and isinstance(e.get("id"), str) else None
                rejected.append({"id": rid, "reason": reason})
                if rid is not None and len(rid) <= 64:
                    ids.append(rid)
                continue
            pgm = to_pgm(base64.b64decode(e["pixels"]), e["height"], e["width"], e.get("channels", 1))
            sha = hashlib.sha256(pgm).hexdigest()
            cur = conn.execute(
                "INSERT OR IGNORE INTO examples (device_id, example_id, kind, label, predicted, confidence, version, "
                "created, received, height, width, image_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (device_id, e["id"], e["kind"], json.dumps(e.get("label")), json.dumps(e.get("predicted")),
                 _num(e.get("confidence"), (int, float)), _num(e.get("version"), int),
                 _num(e.get("created"), (int, float)), now, e["height"], e["width"], sha))
            if cur.rowcount:
                conn.execute("INSERT OR IGNORE INTO images (sha256, data) VALUES (?, ?)", (sha, pgm))
                stored += 1
            else:
                dup += 1
            ids.append(e["id"])
        conn.execute("UPDATE devices SET last_seen = ?, examples = examples + ? WHERE id = ?", (now, stored, device_id))
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
            "ORDER BY e.seq LIMIT ?", (after, *kinds, page)).fetchall()
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
    return {r[0]: r[1] for r in root.db().execute("SELECT kind, count(*) FROM examples GROUP BY kind")}
