"""One folder to carry to a device: ``package(bundle, out)`` writes the metalite wheel, the bundle, an install script.

Layout (docs/install.md)::

    OUT/
      metalite-0.1.0-py3-none-any.whl   pure Python: one wheel for x86-64 and aarch64
      bundle/                            manifest.json and the files it lists, verified before copying
      install.sh                         venv + pip + ``metalite device install`` (``device_install.sh``)
      SHA256SUMS                         ``sha256sum`` format, every file above; install.sh checks it first

The wheel is built from the source tree this metalite runs from (a checkout or an editable install), through
a copy of what a build reads, so the checkout gets no ``build/`` or ``*.egg-info``; a metalite installed
from a wheel passes that wheel (``wheel=``) instead. The folder appears complete or not at all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from metalite.common.errors import MetaliteError
from metalite.common.files import atomic_write_text, replace_dir
from metalite.common.progress import as_progress
from metalite.runtime.bundle import MANIFEST, open_bundle, sha256_file

INSTALL_SCRIPT = Path(__file__).with_name("device_install.sh")
SUMS = "SHA256SUMS"
_WHEEL = re.compile(r"^metalite-[^-]+-py3-none-any\.whl$")


class PackageError(MetaliteError, RuntimeError):
    """The device folder cannot be written: no source tree to build the wheel from, a failed build, a bad wheel."""


def source_root() -> Path | None:
    """The source tree of the running metalite (the folder with setup.py), or None when installed from a wheel."""
    root = Path(__file__).resolve().parents[1]
    setup = root / "setup.py"
    return root if setup.is_file() and '"metalite.tools": "tools"' in setup.read_text() else None


def package_folders(root: Path) -> list:
    """The folders that install as ``metalite.<name>``, from setup.py's ``package_dir``."""
    return sorted(
        set(re.findall(r'"metalite\.[a-z_.]+":\s*"([a-z_]+)"', (root / "setup.py").read_text()))
    )


def build_wheel(out_dir: Path, root: Path | None = None) -> Path:
    """Build the metalite wheel into ``out_dir`` from a copy of the source tree; returns the wheel's path."""
    root, out_dir = (
        root or source_root(),
        Path(out_dir).resolve(),
    )  # pip runs in the copy: no relative paths
    if root is None:
        raise PackageError(
            "this metalite was installed from a wheel, so there is no source tree to build one "
            "from; pass the wheel with --wheel (or run from a checkout)"
        )
    with tempfile.TemporaryDirectory(prefix="metalite-src-") as tmp:
        src = Path(tmp)
        for name in ("setup.py", "pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        for folder in package_folders(root):
            shutil.copytree(
                root / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out_dir),
            str(src),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PackageError(
                f"building the wheel failed (pip wheel, exit {p.returncode}): {tail[0]}"
            )
    wheels = sorted(Path(out_dir).glob("metalite-*.whl"))
    if len(wheels) != 1:
        raise PackageError(f"pip wheel left {len(wheels)} metalite wheels in {out_dir}, expected 1")
    return wheels[0]


def _checksums(folder: Path) -> str:
    rows = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != SUMS:
            rows.append(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n")
    return "".join(rows)


def package(bundle_dir, out, wheel=None, progress=None) -> Path:
    """Write the device folder ``out`` for ``bundle_dir`` (replacing an existing one); returns ``out``.

    Args:
      bundle_dir: the bundle (directory or .zip); verified first.
      out: the folder to write.
      wheel: a metalite wheel to use instead of building one from the source tree.
      progress: a ``metalite.common.progress.Progress``, or None.
    Raises:
      BundleError: the bundle does not verify. PackageError: no wheel could be built or ``wheel`` is not one.
    """
    say = as_progress(progress).log
    bundle = open_bundle(bundle_dir)
    out = Path(out)
    if wheel is not None and not _WHEEL.match(Path(wheel).name):
        raise PackageError(
            f"{wheel}: not a metalite wheel (expected metalite-VERSION-py3-none-any.whl)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would follow the folder to the device
    try:
        if wheel is not None:
            shutil.copy2(wheel, tmp / Path(wheel).name)
        else:
            say("building the metalite wheel from the source tree")
            say(f"wheel: {build_wheel(tmp).name}")
        (tmp / "bundle").mkdir()
        for name in [MANIFEST, *bundle.files]:
            shutil.copy2(bundle.root / name, tmp / "bundle" / name)
        open_bundle(tmp / "bundle")  # the copy verifies too
        shutil.copy2(INSTALL_SCRIPT, tmp / "install.sh")
        (tmp / "install.sh").chmod(0o755)
        atomic_write_text(tmp / SUMS, _checksums(tmp))
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    say(
        f"{out}: {size / 1024:.0f} KiB in {sum(1 for p in out.rglob('*') if p.is_file())} files, "
        f"bundle manifest sha256 {bundle.manifest_sha256[:12]}"
    )
    return out
