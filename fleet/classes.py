"""The class library: classes a device shares (label + support images) for other devices to add.

Images, not embeddings, are shared: every device embeds them with its own backbone, so a class shared
from one bundle version works on any other; gray or colour (an image's ``channels``: 1, the default, or 3).
Each image is stored once per content as a PGM (PPM for colour) in the ``images`` table (like uploaded
examples); a class and its images commit in one transaction. A name belongs to the device that shared it
first: only that device may replace it (``replace``).
"""

from __future__ import annotations

import hashlib
import json
import time

from metalite.common.sqlite import transaction
from metalite.runtime.names import MAX_CLASS_NAME, class_name_problem
from metalite.runtime.sync.wire import WireError, decode_image, encode_image

from .errors import RequestRefused
from .examples import INT64, from_pgm, to_pgm

MAX_IMAGES = 64  # per class: a support set is 1-5 images, a few dozen at most
MAX_CLASS_PIXELS = (
    1 << 21
)  # per class (64 images of 181x181, 8 of 512x512): its share fits the default 4 MiB body
MAX_DEVICE_CLASSES = 1000  # per device (quota; docs/fleet.md)
MAX_NAME = MAX_CLASS_NAME


class ClassRefused(RequestRefused):
    """A share or lookup the library refuses; ``status`` is the HTTP status that fits."""


def check_name(name) -> str:
    """``name`` if it can name a shared class (the rule of ``metalite.runtime.names``), else ClassRefused 422."""
    problem = class_name_problem(name)
    if problem:
        raise ClassRefused(f"name: {problem}", 422)
    return name


def _pgm_of(img, i: int) -> bytes:
    """Image ``i`` of a share, decoded from the wire format, as stored: ClassRefused 422 naming the field."""
    try:
        px = decode_image(img)
    except WireError as e:
        raise ClassRefused(f"image {i}: {e}", 422) from None
    return to_pgm(px.tobytes(), px.shape[0], px.shape[1], 1 if px.ndim == 2 else 3)


def share(root, device_id: int, name, images, version=None, replace: bool = False) -> dict:
    """Store class ``name`` with ``images`` ([{"height", "width", "channels"?, "pixels": base64 uint8}]) from a device.

    Returns {"name", "images", "replaced"}. Raises ``ClassRefused`` (422 bad input, 413 too many images,
    409 the name is taken by another device or exists and ``replace`` is false).
    """
    name = check_name(name)
    if version is not None and not (
        isinstance(version, int) and not isinstance(version, bool) and 0 <= version <= INT64[1]
    ):
        raise ClassRefused("version must be an integer in 0..2**63-1 or null", 422)
    if not isinstance(replace, bool):
        raise ClassRefused("replace must be true or false", 422)
    if not isinstance(images, list) or not images:
        raise ClassRefused("images must be a non-empty list", 422)
    if len(images) > MAX_IMAGES:
        raise ClassRefused(f"at most {MAX_IMAGES} images per class, got {len(images)}", 413)
    pgms = [_pgm_of(img, i) for i, img in enumerate(images)]
    if sum(img["height"] * img["width"] for img in images) > MAX_CLASS_PIXELS:
        raise ClassRefused(f"images: at most {MAX_CLASS_PIXELS} pixels per class in all", 413)
    conn = root.db()
    with transaction(conn):
        old = conn.execute("SELECT id, device_id FROM classes WHERE name = ?", (name,)).fetchone()
        if old is None:
            mine = conn.execute(
                "SELECT count(*) FROM classes WHERE device_id = ?", (device_id,)
            ).fetchone()[0]
            if mine >= MAX_DEVICE_CLASSES:
                raise ClassRefused(
                    f"this device's quota of {MAX_DEVICE_CLASSES} shared classes is reached", 429
                )
        if old is not None and old["device_id"] != device_id:
            raise ClassRefused(
                f"class {name!r} is already shared by another device; pick another name", 409
            )
        if old is not None and not replace:
            raise ClassRefused(
                f"class {name!r} is already shared by this device; pass replace to update it", 409
            )
        if old is not None:
            conn.execute("DELETE FROM class_images WHERE class_id = ?", (old["id"],))
            conn.execute("DELETE FROM classes WHERE id = ?", (old["id"],))
        cid = conn.execute(
            "INSERT INTO classes (name, device_id, version, created, n_images) VALUES (?,?,?,?,?)",
            (name, device_id, version, time.time(), len(pgms)),
        ).lastrowid
        for i, pgm in enumerate(pgms):
            sha = hashlib.sha256(pgm).hexdigest()
            conn.execute("INSERT OR IGNORE INTO images (sha256, data) VALUES (?, ?)", (sha, pgm))
            conn.execute(
                "INSERT INTO class_images (class_id, idx, image_sha256) VALUES (?,?,?)",
                (cid, i, sha),
            )
    return {"name": name, "images": len(pgms), "replaced": old is not None}


def listing(root) -> list:
    """Every shared class, newest first: [{"name", "images", "device", "version", "created"}]."""
    rows = (
        root.db()
        .execute(
            "SELECT c.name, c.n_images AS images, d.name AS device, c.version, c.created FROM classes c "
            "JOIN devices d ON d.id = c.device_id ORDER BY c.created DESC, c.id DESC"
        )
        .fetchall()
    )
    return [dict(r) for r in rows]


def fetch(root, name) -> dict:
    """Class ``name`` with its images: {"name", "device", "version", "images": [{"height", "width", "channels",
    "pixels"}]}.

    Raises ``ClassRefused`` (404) for an unknown name.
    """
    name = check_name(name)
    conn = root.db()
    row = conn.execute(
        "SELECT c.id, c.name, c.version, d.name AS device FROM classes c "
        "JOIN devices d ON d.id = c.device_id WHERE c.name = ?",
        (name,),
    ).fetchone()
    if row is None:
        raise ClassRefused(f"no shared class named {json.dumps(name)[:80]}", 404)
    images = []
    for r in conn.execute(
        "SELECT i.data FROM class_images ci JOIN images i ON i.sha256 = ci.image_sha256 "
        "WHERE ci.class_id = ? ORDER BY ci.idx",
        (row["id"],),
    ):
        images.append(encode_image(from_pgm(r["data"])))
    return {
        "name": row["name"],
        "device": row["device"],
        "version": row["version"],
        "images": images,
    }
