"""A fleet server's directory (``--root``): database, blob store and signing key.

Layout (docs/fleet.md)::

    ROOT/
      fleet.sqlite (+ -wal, -shm)   (0600, root 0700) devices, releases, examples, uploaded images, events
      blobs/ab/ab12…                bundle and model files, named by their sha256
      signing_key.pem               Ed25519 private key (0600); public_key.txt: its public key in hex

Never inside a git work tree unless git ignores it there (``exposed_in_git``): a new root there is refused.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

from metalite.runtime.errors import MissingExtraError

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
        # A root inside a source checkout would have `git add .` commit its private key and uploaded images.
        self.exposed_in = exposed_in_git(self.path)
        try:
            if not db_file.is_file():
                if not create:
                    raise FleetError(f"{self.path}: not a fleet root (no {DB_FILE}); check --root")
                if self.exposed_in is not None:
                    raise FleetError(
                        f"{self.path} is inside the git work tree {self.exposed_in}, where `git add` "
                        "would pick up its signing key, database and uploaded images; use a root outside "
                        "it (e.g. ~/metalite-fleet) or git-ignore it"
                    )
                self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.close(
                    os.open(db_file, os.O_WRONLY | os.O_CREAT, 0o600)
                )  # sqlite gives -wal/-shm this mode
            _owner_only(self.path, 0o700)
            for f in (db_file, self.path / (DB_FILE + "-wal"), self.path / (DB_FILE + "-shm")):
                if f.exists():
                    _owner_only(f, 0o600)
            self.blobs = BlobStore(self.path / "blobs")
        except OSError as e:
            raise FleetError(
                f"cannot set up the fleet root {self.path}: {e.strerror or e}"
            ) from None
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
                raise FleetError(
                    f"{self.path / DB_FILE}: cannot open the fleet database ({e}); "
                    "is the file system read-only or full?"
                ) from None
        return conn

    def signing_key(self) -> tuple:
        """(Ed25519 private key, public hex, created now?); creates the key on first use (needs cryptography)."""
        with self._key_lock:
            if self._key is None:
                try:
                    self._key = keys.load_or_create(self.path)
                except ImportError:
                    raise MissingExtraError("cryptography", "serve") from None
            return self._key

    def public_key(self) -> str | None:
        """The public key in hex, or None if no key was created yet (reads ``public_key.txt``)."""
        p = self.path / keys.PUBLIC_FILE
        return p.read_text().strip() if p.is_file() else None


def exposed_in_git(path) -> Path | None:
    """The git work tree ``path`` lies in, unless git ignores what a fleet root holds there; None outside any."""
    path = Path(path).expanduser().absolute()
    tree = next((p for p in (path, *path.parents) if (p / ".git").exists()), None)
    if tree is None:
        return None
    git = shutil.which("git")
    if git is None:  # cannot ask: assume the worst
        return tree
    for name in (
        "signing_key.pem",
        DB_FILE,
        "blobs/ab/ab12",
    ):  # what the root holds, each kind of it
        try:
            done = subprocess.run(
                [git, "-C", str(tree), "check-ignore", "-q", "--no-index", str(path / name)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            return tree
        if done.returncode != 0:
            return tree
    return None
