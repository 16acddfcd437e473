"""The server's Ed25519 signing key: created on first use, kept as ``signing_key.pem`` (mode 0600).

``public_key.txt`` holds the public key as 64 hex digits: what devices pass as ``--pubkey``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

KEY_FILE = "signing_key.pem"
PUBLIC_FILE = "public_key.txt"


def _public_hex(key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def _create(path: Path) -> bool:
    """Write a new key to ``path`` unless one exists; True if this call created it (safe against a race)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(prefix=".key-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if a key exists: never replaces one
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def load_or_create(root) -> tuple:
    """Return (private key, public key hex, created now?) for the fleet at ``root``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(root) / KEY_FILE
    created = not path.exists() and _create(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    public = _public_hex(key)
    pub_path = Path(root) / PUBLIC_FILE
    if created or not pub_path.is_file():
        pub_path.write_text(public + "\n")
    return key, public, created


def sign(key, data: bytes) -> str:
    """Hex Ed25519 signature of ``data``."""
    return key.sign(data).hex()
