"""A device home: the bundle versions a device has installed, which one runs, its state and its outbox.

Layout (docs/fleet.md)::

    HOME/
      current.json          {"format": "metalite-home", "format_version": 1, "version": 3, "manifest_sha256": "…",
                            "previous": 2, "switched": "…"}: the pointer, replaced atomically; the only thing a
                            switch changes (a pointer without "format" is format 1 too: metalite 0.1.0 wrote it)
      versions/3/           bundle files + release.json + release.sig (synced) or installed.json (``device
                            install``) + state.npz (the adapted classes)
      versions/2/           the previous version, kept until the next switch
      outbox.sqlite         examples waiting for upload (``Outbox``)
      config.json           optional settings (threshold, outbox_capacity, max_accuracy_drop, share_support)
      tmp/                  downloads and re-embedding in progress; emptied by each sync
      .lock, .sync.lock     flock files: state writes vs. switches; one sync at a time
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from ..files import atomic_write, file_lock, fsync_dir
from .errors import SyncError
from .outbox import Outbox

DEFAULTS = {"threshold": 0.6, "outbox_capacity": 1000, "max_accuracy_drop": 0.1, "share_support": True}
STATE_FILE = "state.npz"
HOME_FORMAT = "metalite-home"
HOME_FORMAT_VERSION = 1  # of the layout above, recorded in current.json (docs/versions.md)


class DeviceHome:
    """Opens (and creates) a device home directory.

    Args:
      path: the home directory.
    """

    def __init__(self, path):
        self.root = Path(path).expanduser()
        self.versions = self.root / "versions"
        self.tmp = self.root / "tmp"
        try:
            self.versions.mkdir(parents=True, exist_ok=True)
            self.tmp.mkdir(exist_ok=True)
        except OSError as e:
            raise SyncError(f"cannot create the device home {self.root}: {e.strerror}") from None
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
        if cur.get("format", HOME_FORMAT) != HOME_FORMAT or cur.get("format_version", 1) != HOME_FORMAT_VERSION:
            raise SyncError(f"{p}: device home format {str(cur.get('format_version'))[:20]} is not supported by this "
                            f"metalite (it reads {HOME_FORMAT_VERSION}); upgrade metalite")
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
            raise SyncError(f"{self.root} has no bundle yet; "
                            "run 'metalite device install BUNDLE' or 'metalite sync' first")
        return self.versions / str(v)

    def state_path(self, version: int | None = None) -> Path:
        """The adapted state of ``version`` (default: the running one); may not exist yet."""
        return self.bundle_dir(version) / STATE_FILE

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

    def outbox(self) -> Outbox:
        """The home's outbox (opened once per ``DeviceHome``)."""
        if self._outbox is None:
            self._outbox = Outbox(self.root / "outbox.sqlite", capacity=int(self.config()["outbox_capacity"]))
        return self._outbox

    # ------------------------------------------------------------------ classifier
    def classifier(self, num_threads: int | None = None, delegate: str = "auto", **kwargs):
        """A ``ReportingClassifier`` on the running version, with its saved state if any, feeding the outbox."""
        from .reporting import ReportingClassifier

        version, cfg = self.version, self.config()
        bdir = self.bundle_dir(version)
        opts = dict(outbox=self.outbox(), threshold=float(cfg["threshold"]), version=version,
                    num_threads=num_threads, delegate=delegate, **kwargs)
        state = bdir / STATE_FILE
        if state.is_file():
            return ReportingClassifier.load(bdir, state, **opts)
        return ReportingClassifier(bdir, **opts)

    def save(self, clf) -> None:
        """Save ``clf``'s state as the running version's state (refused if a switch happened meanwhile)."""
        with self.lock():
            if getattr(clf, "version", None) != self.version:
                raise SyncError(f"the home switched to v{self.version} while this classifier runs "
                                f"v{getattr(clf, 'version', None)}; open it again with home.classifier()")
            clf.save(self.state_path())

    # ------------------------------------------------------------------ switching
    def lock(self):
        """Context manager serialising state writes and switches (across processes)."""
        return file_lock(self.root / ".lock")

    def sync_lock(self):
        """Context manager held for a whole sync; a second concurrent sync fails at once."""
        return file_lock(self.root / ".sync.lock", blocking=False,
                         busy=SyncError(f"{self.root}: another sync is running"))

    def staging(self, version: int) -> Path:
        """A fresh directory under ``tmp/`` to assemble ``version`` in."""
        return Path(tempfile.mkdtemp(prefix=f"v{version}-", dir=self.tmp))

    def clean_tmp(self) -> None:
        """Remove leftovers of interrupted syncs (call with ``sync_lock`` held)."""
        for p in self.tmp.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def install(self, staging: Path, version: int, manifest_sha256: str) -> None:
        """Move a complete staging directory to ``versions/<version>`` and point ``current.json`` at it.

        Call with ``lock()`` held. The pointer replace is the switch: a crash before it leaves the old
        version running (the unreferenced directory is replaced by the next sync), a crash after it the new.
        """
        previous = self.version
        if version == previous:
            raise SyncError(f"v{version} is already running")
        target = self.versions / str(version)
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging, target)
        fsync_dir(self.versions)
        pointer = {"format": HOME_FORMAT, "format_version": HOME_FORMAT_VERSION, "version": int(version),
                   "manifest_sha256": manifest_sha256, "previous": previous,
                   "switched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write(self.root / "current.json", lambda f: f.write(json.dumps(pointer, indent=2).encode()))
        self._prune(keep={int(version), previous})

    def _prune(self, keep: set) -> None:
        for p in self.versions.iterdir():
            if not (p.name.isdigit() and int(p.name) in keep):
                shutil.rmtree(p, ignore_errors=True)

    def close(self) -> None:
        """Close the outbox."""
        if self._outbox is not None:
            self._outbox.close()
            self._outbox = None
