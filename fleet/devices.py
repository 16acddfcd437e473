"""Devices: enroll (a token shown once, stored as its sha256), revoke, authenticate, record reports, status."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time

from metalite.common.sqlite import transaction

from .errors import FleetError, RequestRefused
from .examples import INT64

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
EVENTS = ("switched", "refused", "failed")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def enroll(root, name: str, rotate: bool = False) -> str:
    """Register device ``name`` (or give it a new token with ``rotate``); returns the token (shown only now).

    Raises:
      FleetError: bad name, name taken (without ``rotate``) or unknown (with ``rotate``).
    """
    if not _NAME.match(name or ""):
        raise FleetError(f"device name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    token = "mlt_" + secrets.token_urlsafe(32)
    conn = root.db()
    with transaction(conn):
        row = conn.execute("SELECT id FROM devices WHERE name = ?", (name,)).fetchone()
        if rotate:
            if row is None:
                raise FleetError(f"no device named {name!r} to rotate; enroll it first")
            conn.execute(
                "UPDATE devices SET token_sha256 = ?, revoked = NULL WHERE id = ?",
                (_hash(token), row["id"]),
            )
        elif row is not None:
            raise FleetError(f"device {name!r} is already enrolled; --rotate gives it a new token")
        else:
            conn.execute(
                "INSERT INTO devices (name, token_sha256, created) VALUES (?, ?, ?)",
                (name, _hash(token), time.time()),
            )
    return token


def revoke(root, name: str) -> None:
    """Refuse ``name``'s token from now on (its data stays). Raises FleetError if unknown."""
    conn = root.db()
    with transaction(conn):
        cur = conn.execute(
            "UPDATE devices SET revoked = ? WHERE name = ? AND revoked IS NULL", (time.time(), name)
        )
        if cur.rowcount == 0:
            known = conn.execute("SELECT revoked FROM devices WHERE name = ?", (name,)).fetchone()
            raise FleetError(
                f"device {name!r} is already revoked" if known else f"no device named {name!r}"
            )


def authenticate(root, token: str):
    """The device row for ``token`` (a ``sqlite3.Row``), or None if no device has it."""
    return (
        root.db()
        .execute("SELECT id, name, revoked FROM devices WHERE token_sha256 = ?", (_hash(token),))
        .fetchone()
    )


def _text(body: dict, key: str, n: int = 500):
    """Free text a device reports, at most ``n`` characters; what UTF-8 cannot hold (lone surrogates) is
    replaced, so a device's odd file name in a reason never costs it the report."""
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise RequestRefused(f"{key} must be a string or null", 422)
    return v[:n].encode("utf-8", "replace").decode("utf-8")


def _count(body: dict, key: str):
    v = body.get(key)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= INT64[1]:
        raise RequestRefused(f"{key} must be an integer in 0..2**63-1 or null", 422)
    return v


def record_report(root, device_id: int, body: dict) -> None:
    """Store a device's ``POST /v1/report``: running version, outbox size and, if any, an update event.

    Raises RequestRefused (422, naming the field) for a field of the wrong type or range; nothing is stored then.
    """
    now, event = time.time(), body.get("event")
    version, pending, offered = (
        _count(body, "version"),
        _count(body, "pending"),
        _count(body, "offered"),
    )
    platform, reason = _text(body, "platform", 100), _text(body, "reason")
    if event is not None and event not in EVENTS:
        raise RequestRefused(f"event must be one of {', '.join(EVENTS)} or null", 422)
    conn = root.db()
    with transaction(conn):
        conn.execute(
            "UPDATE devices SET last_seen = ?, version = ?, pending = ?, has_state = ?, platform = ? "
            "WHERE id = ?",
            (now, version, pending, int(body.get("has_state") is True), platform, device_id),
        )
        if event is not None:
            detail = json.dumps({k: body.get(k) for k in ("health", "seconds")})[:4000]
            conn.execute(
                "INSERT INTO events (device_id, at, event, version, offered, reason, detail) "
                "VALUES (?,?,?,?,?,?,?)",
                (device_id, now, event, version, offered, reason, detail),
            )
            conn.execute(
                "UPDATE devices SET last_event = ?, last_reason = ?, last_event_at = ? WHERE id = ?",
                (event, reason, now, device_id),
            )


def list_devices(root) -> list:
    """Every device as a dict (no token hashes), by name."""
    rows = root.db().execute(
        "SELECT name, created, revoked, last_seen, version, pending, has_state, platform, "
        "examples, last_event, last_reason, last_event_at FROM devices ORDER BY name"
    )
    return [dict(r) for r in rows]
