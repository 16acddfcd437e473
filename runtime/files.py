"""Where metalite keeps files and how it replaces them, for every part of the project.

- ``atomic_write(path, write)``: one file, written to a temporary next to it, fsynced, renamed over the
  target, directory fsynced (implemented with the state file format in ``state.py``).
- ``atomic_write_bytes`` / ``atomic_write_text``: the same for content already in memory.
- ``replace_dir(tmp, out)``: a finished directory (bundle, model directory, cache entry) renamed into
  place; an old ``out`` is set aside first and removed only after the rename, so a crash leaves the old
  directory or the new one.
- ``replace_refusal(out, overwrite, marker, what)``: the one rule of every command that writes a directory
  (``train``, ``compress``, ``export``): an existing one is replaced only with ``--force``, and only if it is
  one metalite wrote (holds ``marker``) or is empty.
- ``file_lock(path, blocking, busy)``: an exclusive flock held for a ``with`` block (device homes, fleet updates).
- ``cache_root(kind)``: ``$METALITE_CACHE/<kind>``, else ``$XDG_CACHE_HOME/metalite/<kind>``, else
  ``~/.cache/metalite/<kind>`` (kinds: ``data``, ``glyphs``, ``bundles``, ``venvs``).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from .state import fsync_dir
from .state import atomic_write

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "replace_dir", "cache_root", "fsync_dir",
           "file_lock", "replace_refusal"]


@contextlib.contextmanager
def file_lock(path, blocking: bool = True, busy: Exception | None = None):
    """Hold an exclusive flock on ``path`` (created if missing) for a ``with`` block; a no-op where fcntl does
    not exist. Not ``blocking`` and held elsewhere: raises ``busy`` (default: BlockingIOError)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            if busy is None:
                raise
            raise busy from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (its directory must exist); an existing file keeps its mode,
    a new one gets 0666 minus the umask like any new file."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    atomic_write(path, lambda f: f.write(data))
    os.chmod(path, mode)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (its directory must exist)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(tmp, out) -> Path:
    """Rename the finished directory ``tmp`` to ``out`` (same file system), replacing an existing ``out``."""
    tmp, out = Path(tmp), Path(out)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
    try:
        os.rename(tmp, out)
    except OSError:
        if old is not None:
            os.rename(old / out.name, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(out.parent)
    return out


def replace_refusal(out, overwrite: bool, marker: str, what: str) -> str | None:
    """Why ``out`` may not be written (one line), or None: a file, a directory that is not a metalite ``what``
    (no ``marker`` file, not empty), or an existing ``what`` without ``overwrite`` (``--force``)."""
    out = Path(out)
    if not out.exists():
        return None
    if not out.is_dir():
        return f"{out} exists and is not a directory"
    if not any(out.iterdir()):
        return None
    if not (out / marker).exists():
        return f"{out} exists, is not empty and is not a metalite {what}; refusing to replace it"
    if not overwrite:
        return f"{out} already exists; choose another --out or pass --force to replace it"
    return None


def cache_root(kind: str) -> Path:
    """The cache folder for ``kind`` (not created); see the module docstring for the order of choices."""
    if os.environ.get("METALITE_CACHE"):
        return Path(os.environ["METALITE_CACHE"]) / kind
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metalite" / kind
