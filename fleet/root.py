"""A fleet server's directory (``--root``): database, blob store and signing key.

Layout (docs/fleet.md)::

    ROOT/
      fleet.sqlite (+ -wal, -shm)   (0600, root 0700) devices, releases, examples, uploaded images, events
      blobs/ab/ab12…                bundle and model files, named by their sha256
      signing_key.pem               Ed25519 private key (0600); public_key.txt: its public key in hex
"""
from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

from . import db as dblib
from . import keys
from .blobs import BlobStore
from .errors import FleetError

DB_FILE = "fleet.sqlite"


def _owner_only(path: Path, mode: int) -> None:
    """Take group/other permissions off ``path`` (uploaded images and device names are private, like the key)."""
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        try:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077 | (mode & 0o700))
        except OSError:  # a read-only root: reading still works, writes will say why
            pass


class FleetRoot:
    """Opens a fleet directory.

    Args:
      path: the directory.
      create: create it (and the database) if missing; otherwise a missing root is a ``FleetError``.
    """

    def __init__(self, path, create: bool = False):
        self.path = Path(path).expanduser().absolute()
        db_file = self.path / DB_FILE
        try:
            if not db_file.is_file():
                if not create:
                    raise FleetError(f"{self.path}: not a fleet root (no {DB_FILE}); check --root")
                self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT, 0o600))  # sqlite gives -wal/-shm this mode
            _owner_only(self.path, 0o700)
            for f in (db_file, self.path / (DB_FILE + "-wal"), self.path / (DB_FILE + "-shm")):
                if f.exists():
                    _owner_only(f, 0o600)
            self.blobs = BlobStore(self.path / "blobs")
        except OSError as e:
            raise FleetError(f"cannot set up the fleet root {self.path}: {e.strerror or e}") from None
        self._local = threading.local()
        self._key = None
        self._key_lock = threading.Lock()
        self.db()  # creates the schema now, not in the first request

    def db(self):
        """This thread's connection to the database; FleetError (one line) if it cannot be opened."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._local.conn = dblib.connect(self.path / DB_FILE)
            except sqlite3.Error as e:
                raise FleetError(f"{self.path / DB_FILE}: cannot open the fleet database ({e}); "
                                 "is the file system read-only or full?") from None
        return conn

    def signing_key(self) -> tuple:
        """(Ed25519 private key, public hex, created now?); creates the key on first use (needs cryptography)."""
        with self._key_lock:
            if self._key is None:
                try:
                    self._key = keys.load_or_create(self.path)
                except ImportError:
                    raise FleetError("signing needs the 'cryptography' package: pip install 'metalite[serve]'") from None
            return self._key

    def public_key(self) -> str | None:
        """The public key in hex, or None if no key was created yet (reads ``public_key.txt``)."""
        p = self.path / keys.PUBLIC_FILE
        return p.read_text().strip() if p.is_file() else None
