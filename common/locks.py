"""Exclusive advisory locks (``flock``): one holder at a time of a device home, a fleet update, a temporary
being written.

Standard library only, on purpose: the one lock library that would fit (``filelock``) locks a separate
lock file by path, while temporaries need their own open descriptor locked (a cleaner probes them with
``try_lock``), and it would be one more package to install on a device. Where ``fcntl`` does not exist
(not POSIX) locking is a no-op and callers fall back on what else protects them (a temporary's age).
"""

from __future__ import annotations

import contextlib

try:
    import fcntl
except ImportError:  # not POSIX
    fcntl = None


def try_lock(fd: int) -> bool:
    """Take an exclusive flock on the open ``fd`` without waiting; False if another process holds one."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def file_lock(path, blocking: bool = True, busy: Exception | None = None):
    """Hold an exclusive flock on ``path`` (created if missing) for a ``with`` block.

    Not ``blocking`` and held elsewhere: raises ``busy`` (default: BlockingIOError)."""
    if fcntl is None:
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
