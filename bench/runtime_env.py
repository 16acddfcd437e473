"""Runtime-only Python environments for ``metalite bench``: the device's view of the installed runtime.

- ``runtime_site(folder)``: a folder for ``PYTHONPATH`` holding ``metalite/runtime`` copied from the
  installed package (the ``metalite`` namespace has no ``__init__``), so a child process imports the
  runtime and nothing else of metalite, from a repository checkout or a wheel install alike.
- ``tflite_runtime_python(build)``: a Python with ``tflite-runtime`` (numpy<2, as on Raspberry Pi OS):
  this one if it has it, else a venv under ``cache_root("venvs")``, built when ``build`` is true (pip
  downloads about 10 MB; a minute or two). The venv holds only numpy and the interpreter package.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from metalite.runtime.files import atomic_write_text, cache_root

TFLITE_REQUIREMENTS = ["numpy<2", "tflite-runtime"]


def runtime_site(folder) -> Path:
    """``folder/runtime_site`` with ``metalite/runtime`` (this process's runtime package) inside; made once."""
    import metalite.runtime

    site = Path(folder) / "runtime_site"
    if not (site / "metalite" / "runtime" / "__init__.py").is_file():
        (site / "metalite").mkdir(parents=True, exist_ok=True)
        shutil.copytree(Path(metalite.runtime.__file__).parent, site / "metalite" / "runtime", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return site


def _venv_dir() -> Path:
    recipe = {"python": sys.version.split()[0], "executable": sys.executable, "requirements": TFLITE_REQUIREMENTS}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root("venvs") / f"tflite-runtime-{key}"


def _build_venv(root: Path, say) -> None:
    """Create the venv at ``root``; only a venv whose ``.complete`` marker exists counts as built."""
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    say(f"building a tflite-runtime venv in {root} ({' '.join(TFLITE_REQUIREMENTS)})")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    p = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", *TFLITE_REQUIREMENTS],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1200)
    if p.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError((p.stdout.strip().splitlines() or ["pip failed"])[-1][:300])
    atomic_write_text(root / ".complete", json.dumps(TFLITE_REQUIREMENTS))


def tflite_runtime_python(build: bool, say=print) -> tuple:
    """(python with tflite-runtime or None, where it comes from / why there is none)."""
    try:
        import tflite_runtime  # noqa: F401 - installed right here

        return sys.executable, "tflite-runtime installed in this environment"
    except ImportError:
        pass
    root = _venv_dir()
    py = root / "bin" / "python"
    if (root / ".complete").exists() and py.exists():
        return str(py), f"venv {root}"
    if not build:
        return None, "not installed (no tflite-runtime venv built yet; the full run builds one)"
    try:
        _build_venv(root, say)
    except Exception as e:  # noqa: BLE001 - reported in the benchmark, not fatal
        return None, f"not installed (building its venv failed: {str(e).splitlines()[0][:200]})"
    return str(py), f"venv built in {root}"
