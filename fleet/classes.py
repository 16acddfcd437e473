"""The class library: classes a device shares (label + support images) for other devices to add.

Images, not embeddings, are shared: every device embeds them with its own backbone, so a class shared
from one bundle version works on any other; gray or colour (an image's ``channels``: 1, the default, or 3).
Each image is stored once per content as a PGM (PPM for colour) in the ``images`` table (like uploaded
examples); a class and its images commit in one transaction. A name belongs to the device that shared it
first: only that device may replace it (``replace``).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time

from metalite.common.sqlite import transaction
from metalite.runtime.names import MAX_CLASS_NAME, class_name_problem

from .errors import RequestRefused
from .examples import INT64, MAX_SIDE, from_pgm, to_pgm

WIRE_CHANNELS = (1, 3)  # an image's "channels": 1 gray (the default when absent), 3 RGB (row-major R, G, B)

MAX_IMAGES = 64  # per class: a support set is 1-5 images, a few dozen at most
MAX_CLASS_PIXELS = 1 << 21  # per class (64 images of 181x181, 8 of 512x512): its share fits the default 4 MiB body
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
    if not isinstance(img, dict):
        raise ClassRefused(f"image {i}: not an object", 422)
    h, w = img.get("height"), img.get("width")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in (h, w)):
        raise ClassRefused(f"image {i}: height and width must be integers in 1..{MAX_SIDE}", 422)
    c = img.get("channels", 1)
    if c not in WIRE_CHANNELS or isinstance(c, bool):
        raise ClassRefused(f"image {i}: channels must be 1 (gray) or 3 (RGB), got {str(c)[:20]}", 422)
    try:
        px = base64.b64decode(img.get("pixels") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise ClassRefused(f"image {i}: pixels must be base64", 422) from None
    if len(px) != h * w * c:
        raise ClassRefused(f"image {i}: pixels hold {len(px)} bytes, expected height*width*channels = {h * w * c}",
                           422)
    return to_pgm(px, h, w, c)


def share(root, device_id: int, name, images, version=None, replace: bool = False) -> dict:
    """Store class ``name`` with ``images`` ([{"height", "width", "channels"?, "pixels": base64 uint8}]) from a device.

    Returns {"name", "images", "replaced"}. Raises ``ClassRefused`` (422 bad input, 413 too many images,
    409 the name is taken by another device or exists and ``replace`` is false).
    """
    name = check_name(name)
    if version is not None and not (isinstance(version, int) and not isinstance(version, bool)
                                    and 0 <= version <= INT64[1]):
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
            mine = conn.execute("SELECT count(*) FROM classes WHERE device_id = ?", (device_id,)).fetchone()[0]
            if mine >= MAX_DEVICE_CLASSES:
                raise ClassRefused(f"this device's quota of {MAX_DEVICE_CLASSES} shared classes is reached", 429)
        if old is not None and old["device_id"] != device_id:
            raise ClassRefused(f"class {name!r} is already shared by another device; pick another name", 409)
        if old is not None and not replace:
            raise ClassRefused(f"class {name!r} is already shared by this device; pass replace to update it", 409)
        if old is not None:
            conn.execute("DELETE FROM class_images WHERE class_id = ?", (old["id"],))
            conn.execute("DELETE FROM classes WHERE id = ?", (old["id"],))
        cid = conn.execute("INSERT INTO classes (name, device_id, version, created, n_images) VALUES (?,?,?,?,?)",
                           (name, device_id, version, time.time(),
                            len(pgms))).lastrowid
        for i, pgm in enumerate(pgms):
            sha = hashlib.sha256(pgm).hexdigest()
            conn.execute("INSERT OR IGNORE INTO images (sha256, data) VALUES (?, ?)", (sha, pgm))
            conn.execute("INSERT INTO class_images (class_id, idx, image_sha256) VALUES (?,?,?)", (cid, i, sha))
    return {"name": name, "images": len(pgms), "replaced": old is not None}


def listing(root) -> list:
    """Every shared class, newest first: [{"name", "images", "device", "version", "created"}]."""
    rows = root.db().execute(
        "SELECT c.name, c.n_images AS images, d.name AS device, c.version, c.created FROM classes c "
        "JOIN devices d ON d.id = c.device_id ORDER BY c.created DESC, c.id DESC").fetchall()
    return [dict(r) for r in rows]


def fetch(root, name) -> dict:
    """Class ``name`` with its images: {"name", "device", "version", "images": [{"height", "width", "channels",
    "pixels"}]}.

    Raises ``ClassRefused`` (404) for an unknown name.
    """
    name = check_name(name)
    conn = root.db()
    row = conn.execute("SELECT c.id, c.name, c.version, d.name AS device FROM classes c "
                       "JOIN devices d ON d.id = c.device_id WHERE c.name = ?", (name,)).fetchone()
    if row is None:
        raise ClassRefused(f"no shared class named {json.dumps(name)[:80]}", 404)
    images = []
    for r in conn.execute("SELECT i.data FROM class_images ci JOIN images i ON i.sha256 = ci.image_sha256 "
                          "WHERE ci.class_id = ? ORDER BY ci.idx", (row["id"],)):
        px = from_pgm(r["data"])
        images.append({"height": int(px.shape[0]), "width": int(px.shape[1]),
                       "channels": 1 if px.ndim == 2 else int(px.shape[2]),
                       "pixels": base64.b64encode(px.tobytes()).decode("ascii")})
    return {"name": row["name"], "device": row["device"], "version": row["version"], "images": images}
