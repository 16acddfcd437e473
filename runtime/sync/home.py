"""A device home: the bundle versions a device has installed, which one runs, its state and its outbox.

Layout (docs/fleet.md)::

    HOME/
      current.json          {"format": "metalite-home", "format_version": 1, "version": 3, "manifest_sha256": "…",
                            "previous": 2, "switched": "…"}: the pointer, replaced atomically; the only thing a
                            switch changes (a pointer without "format" is format 1 too: metalite 0.1.0 wrote it)
      versions/3/           bundle files + release.json + release.sig (synced) or installed.json (``device
                            install``), as verified: never written afterwards
      versions/2/           the previous version, kept until the next switch
      states/3.npz          the adapted classes of v3 (homes made before issue 22 kept versions/3/state.npz:
                            still read, moved here by the next save)
      outbox.sqlite         examples waiting for upload (``Outbox``)
      config.json           optional settings (threshold, outbox_capacity, max_accuracy_drop, share_support)
      tmp/                  downloads and re-embedding in progress; emptied by each sync
      .lock, .sync.lock     flock files: state writes vs. switches; one sync at a time
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import time
import warnings
from pathlib import Path

from metalite.common.files import atomic_write, fsync_dir
from metalite.common.locks import file_lock

from .errors import SyncError
from .outbox import Outbox, OutboxUnavailableWarning, UnavailableOutbox

DEFAULTS = {
    "threshold": 0.6,
    "outbox_capacity": 1000,
    "max_accuracy_drop": 0.1,
    "share_support": True,
}
STATE_FILE = "state.npz"
HOME_FORMAT = "metalite-home"
HOME_FORMAT_VERSION = 1  # of the layout above, recorded in current.json (docs/versions.md)


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        return False


class DeviceHome:
    """Opens (and creates) a device home directory.

    Args:
      path: the home directory.
    """

    def __init__(self, path):
        self.root = Path(path).expanduser()
        self.versions = self.root / "versions"
        self.tmp = self.root / "tmp"
        self.states = self.root / "states"
        try:
            self.versions.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(exist_ok=True)
        except OSError as e:
            raise SyncError(f"cannot create the device home {self.root}: {e.strerror}") from None
        try:
            self.states.mkdir(exist_ok=True)
        except (
            OSError
        ):  # a read-only home made before issue 22: its states are still read from versions/
            pass
        self._outbox: Outbox | None = None

    # ------------------------------------------------------------------ what runs
    def current(self) -> dict | None:
        """The pointer (``current.json``) as a dict, or None before the first install."""
        p = self.root / "current.json"
        try:
            cur = json.loads(p.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise SyncError(f"{p}: unreadable ({e}); remove it and sync again") from None
        if not isinstance(cur, dict) or not isinstance(cur.get("version"), int):
            raise SyncError(f"{p}: not a version pointer; remove it and sync again")
        if (
            cur.get("format", HOME_FORMAT) != HOME_FORMAT
            or cur.get("format_version", 1) != HOME_FORMAT_VERSION
        ):
            raise SyncError(
                f"{p}: device home format {str(cur.get('format_version'))[:20]} is not supported by this "
                f"metalite (it reads {HOME_FORMAT_VERSION}); upgrade metalite"
            )
        return cur

    @property
    def version(self) -> int | None:
        """The running bundle version, or None."""
        cur = self.current()
        return None if cur is None else cur["version"]

    def bundle_dir(self, version: int | None = None) -> Path:
        """Directory of ``version`` (default: the running one)."""
        v = self.version if version is None else version
        if v is None:
            raise SyncError(
                f"{self.root} has no bundle yet; "
                "run 'metalite device install BUNDLE' or 'metalite sync' first"
            )
        return self.versions / str(v)

    def state_path(self, version: int | None = None) -> Path:
        """The adapted state of ``version`` (default: the running one); may not exist yet."""
        new = self._state_file(version)
        legacy = self.bundle_dir(version) / STATE_FILE
        return legacy if not new.exists() and legacy.is_file() else new

    def _state_file(self, version: int | None = None) -> Path:
        """Where the state of ``version`` is written: outside the verified version directory."""
        return self.states / f"{self.bundle_dir(version).name}.npz"

    def config(self) -> dict:
        """Settings: ``DEFAULTS`` updated with ``config.json`` if present."""
        cfg = dict(DEFAULTS)
        p = self.root / "config.json"
        if p.is_file():
            try:
                cfg.update(json.loads(p.read_text()))
            except (OSError, ValueError) as e:
                raise SyncError(f"{p}: not valid JSON ({e})") from None
        return cfg

    def outbox(self):
        """The home's outbox (opened once per ``DeviceHome``). If it cannot be opened for writing (the SD card
        went read-only, the disk is full) an ``UnavailableOutbox``, with one ``OutboxUnavailableWarning``:
        predictions must go on, the outbox is only a by-product."""
        if self._outbox is None:
            path = self.root / "outbox.sqlite"
            try:
                self._outbox = Outbox(path, capacity=int(self.config()["outbox_capacity"]))
            except (sqlite3.Error, OSError) as e:
                reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(
                    ": "
                )
                if _read_only(self.root):
                    reason = f"read-only file system; {reason}"
                self._outbox = UnavailableOutbox(path, reason)
                warnings.warn(
                    f"outbox {path} cannot be written ({reason}); predictions go on, nothing is recorded",
                    OutboxUnavailableWarning,
                    stacklevel=2,
                )
        return self._outbox

    # ------------------------------------------------------------------ classifier
    def classifier(self, num_threads: int | None = None, delegate: str = "auto", **kwargs):
        """A ``ReportingClassifier`` on the running version, with its saved state if any, feeding the outbox."""
        from .reporting import ReportingClassifier

        version, cfg = self.version, self.config()
        bdir = self.bundle_dir(version)
        outbox = self.outbox()
        opts = dict(
            outbox=outbox if outbox.writable else None,
            threshold=float(cfg["threshold"]),
            version=version,
            num_threads=num_threads,
            delegate=delegate,
            **kwargs,
        )
        state = self.state_path(version)
        if state.is_file():
            return ReportingClassifier.load(bdir, state, **opts)
        return ReportingClassifier(bdir, **opts)

    def save(self, clf) -> None:
        """Save ``clf``'s state as the running version's state (refused if a switch happened meanwhile)."""
        with self.lock():
            if getattr(clf, "version", None) != self.version:
                raise SyncError(
                    f"the home switched to v{self.version} while this classifier runs "
                    f"v{getattr(clf, 'version', None)}; open it again with home.classifier()"
                )
            legacy = self.bundle_dir() / STATE_FILE
            self.states.mkdir(exist_ok=True)
            clf.save(self._state_file())
            if (
                legacy.is_file()
            ):  # moved out of the verified directory (a home made before issue 22)
                legacy.unlink()

    # ------------------------------------------------------------------ switching
    def lock(self):
        """Context manager serialising state writes and switches (across processes)."""
        return file_lock(self.root / ".lock")

    def sync_lock(self):
        """Context manager held for a whole sync; a second concurrent sync fails at once."""
        return file_lock(
            self.root / ".sync.lock",
            blocking=False,
            busy=SyncError(f"{self.root}: another sync is running"),
        )

    def staging(self, version: int) -> Path:
        """A fresh directory under ``tmp/`` to assemble ``version`` in."""
        return Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=self.tmp))

    def clean_tmp(self) -> None:
        """Remove leftovers of interrupted syncs (call with ``sync_lock`` held)."""
        for p in self.tmp.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def install(
        self, staging: Path, version: int, manifest_sha256: str, state: Path | None = None
    ) -> None:
        """Move a complete staging directory to ``versions/<version>`` (and the carried ``state`` file, if any,
        to ``states/<version>.npz``) and point ``current.json`` at it.

        Call with ``lock()`` held. The pointer replace is the switch: a crash before it leaves the old
        version running (the unreferenced directory is replaced by the next sync), a crash after it the new.
        """
        previous = self.version
        if version == previous:
            raise SyncError(f"v{version} is already running")
        target = self.versions / str(version)
        if target.exists():
            shutil.rmtree(target)
        self.states.mkdir(exist_ok=True)
        dest = self.states / f"{int(version)}.npz"
        if state is not None:
            os.replace(state, dest)
        else:
            dest.unlink(
                missing_ok=True
            )  # a state left from an earlier install of this number is not this one's
        fsync_dir(self.states)
        os.rename(staging, target)
        fsync_dir(self.versions)
        pointer = {
            "format": HOME_FORMAT,
            "format_version": HOME_FORMAT_VERSION,
            "version": int(version),
            "manifest_sha256": manifest_sha256,
            "previous": previous,
            "switched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write(
            self.root / "current.json", lambda f: f.write(json.dumps(pointer, indent=2).encode())
        )
        self._prune(keep={int(version), previous})

    def _prune(self, keep: set) -> None:
        for p in self.versions.iterdir():
            if not (p.name.isdigit() and int(p.name) in keep):
                shutil.rmtree(p, ignore_errors=True)
        for p in self.states.glob("*.npz"):
            if not (p.stem.isdigit() and int(p.stem) in keep):
                p.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the outbox."""
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
