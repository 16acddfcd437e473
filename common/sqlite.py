"""SQLite write transactions, for every database metalite keeps (the fleet's, a device's outbox).

Connections are opened in autocommit mode (``isolation_level=None``) and every write goes through
``transaction``: ``BEGIN IMMEDIATE`` takes the write lock at once, so concurrent writers queue on the busy
timeout instead of failing to upgrade a read lock, and any exception rolls the whole write back.
"""

from __future__ import annotations

import contextlib
import sqlite3


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection):
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
