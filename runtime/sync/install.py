"""A device home filled from a bundle on disk, no fleet: ``install_bundle(home, bundle) -> version``.

What ``metalite device install`` (and the device app) run. The bundle is verified (``open_bundle``: format and
every file's size and sha256), copied into ``HOME/tmp`` and verified again there, then switched to exactly as
a fleet update is (``update.switch_to``): the running classes are re-embedded by the new backbone and must pass
the same health check, and the switch is one atomic replace of ``current.json``. Versions count up from the
running one; installing the bundle that already runs changes nothing.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from metalite.common.files import atomic_write_text
from metalite.common.progress import as_progress

from ..bundle import MANIFEST, open_bundle
from .home import DeviceHome
from .update import switch_to

INSTALLED_FILE = (
    "installed.json"  # in versions/N/ of a local install, where a synced one has release.json
)


def _copy_bundle(bundle, staging: Path) -> None:
    """The manifest and the files it lists (nothing else a bundle folder may hold) into ``staging``."""
    for name in [MANIFEST, *bundle.files]:
        shutil.copyfile(bundle.root / name, staging / name)


def install_bundle(
    home, bundle_dir, progress=None, max_drop: float | None = None, delegate: str = "auto"
) -> int:
    """Install the bundle at ``bundle_dir`` (a directory or .zip) as the next version of ``home``; return it.

    Args:
      home: a ``DeviceHome`` or its path (created if missing).
      bundle_dir: the bundle to install.
      progress: a ``metalite.common.progress.Progress`` for news lines, or None (silent).
      max_drop: largest allowed drop of the support-set accuracy when classes are carried over
        (default: the home's config ``max_accuracy_drop``, 0.1).
      delegate: for re-embedding the running classes with the new backbone.
    Returns:
      The version now running (the running one, unchanged, if it is this very bundle).
    Raises:
      BundleError: the bundle is missing, corrupt or of an unknown format (nothing changed).
      UpdateRefusedError: the carried classes fail the health check (the old version keeps running).
      SyncError: another install or sync is running in this home, or the home is unusable.
    """
    home = home if isinstance(home, DeviceHome) else DeviceHome(home)
    say = as_progress(progress).log
    bundle = open_bundle(bundle_dir)
    drop = float(home.config()["max_accuracy_drop"] if max_drop is None else max_drop)
    with home.sync_lock():
        home.clean_tmp()
        cur = home.current()
        if cur is not None and cur.get("manifest_sha256") == bundle.manifest_sha256:
            say(f"{bundle_dir} is already running as v{cur['version']}; nothing to do")
            return cur["version"]
        version = 1 if cur is None else cur["version"] + 1
        staging = home.staging(version)
        try:
            say(
                f"copying {bundle_dir} ({len(bundle.files) + 1} files) into {home.root} as v{version}"
            )
            _copy_bundle(bundle, staging)
            open_bundle(staging)  # the copy, checked against the manifest again
            atomic_write_text(
                staging / INSTALLED_FILE,
                json.dumps(
                    {
                        "source": str(bundle_dir),
                        "manifest_sha256": bundle.manifest_sha256,
                        "installed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    },
                    indent=2,
                ),
            )
            switch_to(home, staging, version, bundle.manifest_sha256, drop, delegate, say, {})
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            staging.parent.joinpath(f"{staging.name}.npz").unlink(
                missing_ok=True
            )  # a carried state not installed
    say(f"v{version} installed and running" + (f" (was v{cur['version']})" if cur else ""))
    return version
