"""Where metalite keeps files and how it replaces them, for every part of the project.

- ``atomic_write(path, write)``: one file, written to a temporary next to it, fsynced, renamed over the
  target, directory fsynced; the rules below.
- ``atomic_write_bytes`` / ``atomic_write_text``: the same for content already in memory.
- ``replace_dir(tmp, out)``: a finished directory (bundle, model directory, cache entry) renamed into
  place; an old ``out`` is set aside first and removed only after the rename, so a crash leaves the old
  directory or the new one.
- ``replace_refusal(out, overwrite, marker, what)``: the one rule of every command that writes a directory
  (``train``, ``compress``, ``export``): an existing one is replaced only with ``--force``, and only if it is
  one metalite wrote (holds ``marker``) or is empty.
- ``new_temp(directory, name)`` / ``remove_stale_temps(directory, name)``: a locked temporary to write, and
  the temporaries crashed writes left, removed (file locks: ``common/locks.py``).
- ``cache_root(kind)``: ``$METALITE_CACHE/<kind>``, else ``$XDG_CACHE_HOME/metalite/<kind>``, else
  ``~/.cache/metalite/<kind>``; each part names its own kinds.

``atomic_write`` behaves like a careful database: it follows symlinks and replaces the file they point to
(the link stays a link), refuses to replace anything but a regular file (device node, FIFO, directory),
keeps the replaced file's mode (and owner, as root) and refuses a read-only one; a new file gets 0666
minus the umask, like any file. It writes ``.<name>.<random>.tmp`` next to the target, holding an
``flock`` on it, fsyncs it, ``os.replace``s it over the target and fsyncs the directory: a crash leaves
the old file or the new one, never half of one. Temporaries that a crashed write left behind (ours by
name, unlocked, older than ``STALE_TEMP_AGE`` seconds) are deleted by the next write to the same name.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path

from .errors import FileRefusedError
from .locks import try_lock

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "replace_dir",
    "cache_root",
    "fsync_dir",
    "replace_refusal",
    "new_temp",
    "remove_stale_temps",
    "STALE_TEMP_AGE",
]

STALE_TEMP_AGE = (
    60.0  # seconds; a live save holds its temporary's lock, this only covers its first instant
)
_TEMP_TOKEN = re.compile(r"[A-Za-z0-9_]{8,32}")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_temp(directory: Path, name: str, mode: int = 0o600) -> tuple:
    """(fd, path) of a new temporary ``directory/.<name>.<random>.tmp``, created with ``mode`` (minus the umask)
    and flocked until closed or renamed, so ``remove_stale_temps`` leaves it alone while it is written."""
    path = Path(directory) / f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, mode)
    try_lock(fd)
    return fd, path


def remove_stale_temps(directory, name: str, min_age: float = STALE_TEMP_AGE) -> list:
    """Delete the temporaries of crashed saves to ``directory/name``; return the names removed.

    Only files named like ours (``.<name>.<token>.tmp``), regular, older than ``min_age`` seconds and
    not locked (a save in progress holds an flock on its temporary until it is renamed) are removed.
    """
    prefix, removed, now = f".{name}.", [], time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for ent in entries:
        n = ent.name
        if not (
            n.startswith(prefix)
            and n.endswith(".tmp")
            and _TEMP_TOKEN.fullmatch(n[len(prefix) : -4])
        ):
            continue
        try:
            st = ent.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            fd = os.open(ent.path, os.O_RDONLY | _O_NOFOLLOW)
        except OSError:
            continue
        try:
            if try_lock(fd):
                os.unlink(ent.path)
                removed.append(n)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


_KINDS = (
    (stat.S_ISDIR, "directory"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "FIFO"),
    (stat.S_ISSOCK, "socket"),
)


def _save_target(path: Path):
    """``(file to replace, its stat or None)``: symlinks followed; anything but a regular file refused."""
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "special file")
        raise FileRefusedError(f"{path}: is a {kind}, not a regular file; refusing to replace it")
    if not os.access(target, os.W_OK):
        raise PermissionError(
            errno.EACCES, "the file is read-only; refusing to replace it", str(path)
        )
    return target, st


def atomic_write(path, write) -> None:
    """Write a file atomically, through symlinks, keeping the replaced file's mode (module docstring).

    Args:
      path: target path (its directory must exist).
      write: function taking an open binary file object and writing the content.
    Raises:
      FileRefusedError: ``path`` is (or links to) a directory, device, FIFO or socket.
      OSError: the directory is missing or not writable, the disk is full, the target is read-only.
    """
    target, old = _save_target(Path(path))
    directory = target.parent
    remove_stale_temps(directory, target.name)
    fd, tmp = new_temp(directory, target.name, 0o666 if old is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if old is not None:
                os.chmod(tmp, stat.S_IMODE(old.st_mode))
                if getattr(os, "geteuid", lambda: -1)() == 0:
                    try:
                        os.chown(tmp, old.st_uid, old.st_gid)
                    except OSError:  # e.g. a filesystem without owners
                        pass
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


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
