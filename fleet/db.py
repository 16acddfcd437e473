"""The fleet database: SQLite in WAL mode, one connection per thread, schema in ``SCHEMA``.

``synchronous=FULL``: a commit is on disk before the server answers, so an acknowledged upload
survives a crash or power cut. Write transactions start with ``BEGIN IMMEDIATE`` (``transaction``)
so concurrent writers queue on the busy timeout instead of failing to upgrade a read lock
(``metalite.common.sqlite``).
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 2  # 2: the class library (classes, class_images)
SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_sha256 TEXT NOT NULL UNIQUE,
  created REAL NOT NULL, revoked REAL, last_seen REAL, version INTEGER, pending INTEGER, has_state INTEGER,
  platform TEXT, examples INTEGER NOT NULL DEFAULT 0,
  last_event TEXT, last_reason TEXT, last_event_at REAL);
CREATE TABLE IF NOT EXISTS releases (
  version INTEGER PRIMARY KEY, release TEXT NOT NULL, signature TEXT NOT NULL, manifest_sha256 TEXT NOT NULL,
  created REAL NOT NULL, note TEXT NOT NULL DEFAULT '', source TEXT, metrics TEXT);
CREATE TABLE IF NOT EXISTS release_files (
  version INTEGER NOT NULL REFERENCES releases(version), name TEXT NOT NULL,
  sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (version, name));
CREATE INDEX IF NOT EXISTS release_files_sha256 ON release_files (sha256);
CREATE TABLE IF NOT EXISTS model_files (
  version INTEGER NOT NULL REFERENCES releases(version), path TEXT NOT NULL,
  sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (version, path));
CREATE TABLE IF NOT EXISTS examples (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id INTEGER NOT NULL REFERENCES devices(id),
  example_id TEXT NOT NULL, kind TEXT NOT NULL, label TEXT, predicted TEXT, confidence REAL,
  version INTEGER, created REAL, received REAL NOT NULL,
  height INTEGER NOT NULL, width INTEGER NOT NULL, image_sha256 TEXT NOT NULL,
  UNIQUE (device_id, example_id));
CREATE TABLE IF NOT EXISTS images (sha256 TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS classes (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, device_id INTEGER NOT NULL REFERENCES devices(id),
  version INTEGER, created REAL NOT NULL, n_images INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS class_images (
  class_id INTEGER NOT NULL REFERENCES classes(id), idx INTEGER NOT NULL, image_sha256 TEXT NOT NULL,
  PRIMARY KEY (class_id, idx));
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id INTEGER NOT NULL REFERENCES devices(id), at REAL NOT NULL,
  event TEXT NOT NULL, version INTEGER, offered INTEGER, reason TEXT, detail TEXT);
"""


def connect(path) -> sqlite3.Connection:
    """Open (and create) the database with the fleet's settings; autocommit mode, rows as ``sqlite3.Row``."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        conn.close()
        raise sqlite3.DatabaseError(
            f"{path}: schema version {version} is newer than this metalite ({SCHEMA_VERSION})"
        )
    if version < SCHEMA_VERSION:  # idempotent DDL in one transaction, so racing first starts agree
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
        )
    return conn
