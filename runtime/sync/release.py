"""The signed release document: what the server signs and the device checks before downloading anything.

A release is canonical JSON (sorted keys, no spaces) of::

    {"format": "metalite-release", "format_version": 1, "version": 3,
     "manifest_sha256": "<sha256 of the bundle's manifest.json>",
     "files": {"manifest.json": {"sha256": "…", "bytes": 2003}, "backbone.tflite": {...}, ...},
     "created": "2026-11-23T12:00:00Z", "note": "…"}

The server signs these exact bytes with its Ed25519 key; the device verifies the signature over the bytes
it received (no re-serialisation), then downloads every file by its sha256 and checks size and hash.
``cryptography`` is imported only to verify a signature, so the runtime works without it otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import MissingExtraError
from ..names import bundle_file_problem, terminal_safe
from .errors import SyncError, UpdateRefusedError

RELEASE_FORMAT = "metalite-release"
RELEASE_FORMAT_VERSION = 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def is_sha256(text) -> bool:
    """True if ``text`` is 64 lowercase hex digits (a blob name)."""
    return isinstance(text, str) and bool(_HEX64.match(text))


def make_release(
    version: int, manifest_sha256: str, files: dict, created: str, note: str = ""
) -> bytes:
    """The canonical bytes of a release document (what the server signs)."""
    doc = {
        "format": RELEASE_FORMAT,
        "format_version": RELEASE_FORMAT_VERSION,
        "version": int(version),
        "manifest_sha256": manifest_sha256,
        "created": created,
        "note": note,
        "files": {
            name: {"sha256": f["sha256"], "bytes": int(f["bytes"])}
            for name, f in sorted(files.items())
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def parse_public_key(text) -> bytes:
    """An Ed25519 public key from 64 hex digits, or from a file holding them; returns the 32 raw bytes.

    Raises:
      SyncError: neither a key nor a readable file with one.
    """
    s = str(text).strip()
    if not re.fullmatch(r"[0-9a-fA-F]{64}", s):
        p = Path(s).expanduser()
        try:
            s = p.read_text().strip() if p.is_file() else s
        except OSError as e:
            raise SyncError(f"{p}: cannot read the public key ({e.strerror})") from None
    if not re.fullmatch(r"[0-9a-fA-F]{64}", s):
        raise SyncError(
            f"public key must be 64 hex digits (as 'metalite serve' prints it) or a file holding them, got {str(text)[:40]!r}"
        )
    return bytes.fromhex(s)


def _check_signature(data: bytes, signature: str, public_key: bytes) -> None:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise SyncError(
            str(MissingExtraError("cryptography", "sync"))
        ) from None  # a SyncError, as documented
    try:
        sig = bytes.fromhex(signature)
    except (TypeError, ValueError):
        raise UpdateRefusedError("the release signature is not hex; refused") from None
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(sig, data)
    except InvalidSignature:
        raise UpdateRefusedError(
            "the release signature does not match the server's public key; refused"
        ) from None


def _check_fields(doc) -> dict:
    if not isinstance(doc, dict) or doc.get("format") != RELEASE_FORMAT:
        raise UpdateRefusedError("not a metalite release document; refused")
    if doc.get("format_version") != RELEASE_FORMAT_VERSION:
        raise UpdateRefusedError(
            f"release format_version {doc.get('format_version')!r} is not supported; upgrade metalite"
        )
    version, files = doc.get("version"), doc.get("files")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UpdateRefusedError(f"release version {version!r} is not a positive integer; refused")
    if (
        not is_sha256(doc.get("manifest_sha256"))
        or not isinstance(files, dict)
        or "manifest.json" not in files
    ):
        raise UpdateRefusedError(
            f"release v{version} is incomplete (manifest sha256 or file list); refused"
        )
    for name, f in files.items():
        problem = None if name == "manifest.json" else bundle_file_problem(name)
        if problem:
            raise UpdateRefusedError(
                f"release v{version}: bad file entry {terminal_safe(name)[:80]!r}: {problem}; refused"
            )
        if (
            not isinstance(f, dict)
            or not is_sha256(f.get("sha256"))
            or isinstance(f.get("bytes"), bool)
            or not isinstance(f.get("bytes"), int)
            or f["bytes"] < 0
        ):
            raise UpdateRefusedError(
                f"release v{version}: bad file entry {terminal_safe(name)[:80]!r}; refused"
            )
    if files["manifest.json"]["sha256"] != doc["manifest_sha256"]:
        raise UpdateRefusedError(
            f"release v{version}: manifest.json hash differs from manifest_sha256; refused"
        )
    return doc


def verify_release(
    data: bytes, signature: str | None, public_key: bytes | None, allow_unsigned: bool = False
) -> dict:
    """Check a release's signature and fields; return the parsed document.

    Args:
      data: the release bytes exactly as received.
      signature: hex Ed25519 signature, or None/"" if the server sent none.
      public_key: the server's 32-byte public key (``parse_public_key``), or None.
      allow_unsigned: accept a release without checking any signature (explicit opt-in).
    Raises:
      UpdateRefusedError: unsigned or wrongly signed (unless allowed), or malformed.
      SyncError: a signature must be checked but ``cryptography`` is not installed.
    """
    if not allow_unsigned:
        if public_key is None:
            raise UpdateRefusedError(
                "no server public key given (--pubkey); refusing unverified updates "
                "(--allow-unsigned accepts them)"
            )
        if not signature:
            raise UpdateRefusedError(
                "the release is unsigned; refused (--allow-unsigned accepts it)"
            )
        _check_signature(data, signature, public_key)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UpdateRefusedError("the release document is not valid JSON; refused") from None
    return _check_fields(doc)
