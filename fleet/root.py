"""A fleet server's directory (``--root``): database, blob store and signing key.

Layout (docs/fleet.md)::

    ROOT/
      fleet.sqlite (+ -wal, -shm)   devices, releases, examples, uploaded images, events
      blobs/ab/ab12…                bundle and model files, named by their sha256
      signing_key.pem               Ed25519 private key (0600); public_key.txt: its public key in hex

Never inside a git work tree unless git ignores it there (``exposed_in_git``): a new root there is refused.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

from metalite.runtime.errors import MissingExtraError

from . import db as dblib
from . import keys
from .blobs import BlobStore
from .errors import FleetError

DB_FILE = "fleet.sqlite"


class FleetRoot:
    """Opens a fleet directory.

    Args:
      path: the directory.
      create: create it (and the database) if missing; otherwise a missing root is a ``FleetError``.
    """

    def __init__(self, path, create: bool = False):
        self.path = Path(path).expanduser().absolute()
        # A root inside a source checkout would have `git add .` commit its private key and uploaded images.
        self.exposed_in = exposed_in_git(self.path)
        if not (self.path / DB_FILE).is_file():
            if not create:
                raise FleetError(f"{self.path}: not a fleet root (no {DB_FILE}); check --root")
            if self.exposed_in is not None:
                raise FleetError(f"{self.path} is inside the git work tree {self.exposed_in}, where `git add` would "
                                 "pick up its signing key, database and uploaded images; use a root outside it "
                                 "(e.g. ~/metalite-fleet) or git-ignore it")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise FleetError(f"cannot create {self.path}: {e.strerror}") from None
        self.blobs = BlobStore(self.path / "blobs")
        self._local = threading.local()
        self._key = None
        self._key_lock = threading.Lock()
        self.db()  # creates the schema now, not in the first request

    def db(self):
        """This thread's connection to the database."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = dblib.connect(self.path / DB_FILE)
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
    for name in ("signing_key.pem", DB_FILE, "blobs/ab/ab12"):  # what the root holds, each kind of it
        try:
            done = subprocess.run([git, "-C", str(tree), "check-ignore", "-q", "--no-index", str(path / name)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return tree
        if done.returncode != 0:
            return tree
    return None
