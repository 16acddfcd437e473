"""Runtime-only Python environments for ``metalite bench``: the device's view of the installed runtime.

- ``runtime_site(folder)``: a folder for ``PYTHONPATH`` holding ``metalite/runtime`` and ``metalite/common``
  (the helpers the runtime imports) copied from the installed package (the ``metalite`` namespace has no
  ``__init__``), so a child process imports the runtime and nothing else of metalite, from a repository
  checkout or a wheel install alike.
- ``tflite_runtime_python(build)``: a Python with ``tflite-runtime`` (numpy<2, as on Raspberry Pi OS):
  this one if it has it, else a venv under ``cache_root("venvs")``, built when ``build`` is true (pip
  downloads about 10 MB; a minute or two). The venv holds only numpy and the interpreter package.
- ``build_venv(root, requirements)``: the one venv builder (the device tests build theirs with it too): a
  fresh venv with pip and the requirements, counted as built only once its ``.complete`` marker exists.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from metalite.common.errors import MetaliteError
from metalite.common.files import atomic_write_text, cache_root

TFLITE_REQUIREMENTS = ["numpy<2", "tflite-runtime"]
COMPLETE = (
    ".complete"  # a venv counts as built once this marker exists: an interrupted build is redone
)


class VenvError(MetaliteError, RuntimeError):
    """A venv could not be built (pip failed); the message is pip's last line."""


def runtime_site(folder) -> Path:
    """``folder/runtime_site`` with this process's ``metalite/runtime`` and ``metalite/common`` inside; made once."""
    import metalite.common
    import metalite.runtime

    site = Path(folder) / "runtime_site"
    for package in (metalite.runtime, metalite.common):
        name = package.__name__.split(".")[1]
        if not (site / "metalite" / name / "__init__.py").is_file():
            (site / "metalite").mkdir(parents=True, exist_ok=True)
            shutil.copytree(
                Path(package.__file__).parent,
                site / "metalite" / name,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
    return site


def _venv_dir() -> Path:
    recipe = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "requirements": TFLITE_REQUIREMENTS,
    }
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root("venvs") / f"tflite-runtime-{key}"


def build_venv(
    root, requirements: list, say=print, marker: str | None = None, timeout: float = 1200
) -> Path:
    """A fresh venv at ``root`` (replacing whatever is there) with pip and ``requirements``; returns its python.

    ``marker``: the text of its ``.complete`` file (default: the requirements as JSON). Raises ``VenvError``
    when pip fails, after removing the half-built venv."""
    root = Path(root)
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    say(f"building a venv in {root} ({' '.join(requirements) or 'pip only'})")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    py = root / "bin" / "python"
    if requirements:
        p = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", *requirements],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        if p.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise VenvError((p.stdout.strip().splitlines() or ["pip failed"])[-1][:300])
    atomic_write_text(root / COMPLETE, json.dumps(requirements) if marker is None else marker)
    return py


def tflite_runtime_python(build: bool, say=print) -> tuple:
    """(python with tflite-runtime or None, where it comes from / why there is none)."""
    try:
        import tflite_runtime  # noqa: F401 - installed right here

        return sys.executable, "tflite-runtime installed in this environment"
    except ImportError:
        pass
    root = _venv_dir()
    py = root / "bin" / "python"
    if (root / COMPLETE).exists() and py.exists():
        return str(py), f"venv {root}"
    if not build:
        return None, "not installed (no tflite-runtime venv built yet; the full run builds one)"
    try:
        build_venv(root, TFLITE_REQUIREMENTS, say)
    except Exception as e:  # noqa: BLE001 - reported in the benchmark, not fatal
        return None, f"not installed (building its venv failed: {str(e).splitlines()[0][:200]})"
    return str(py), f"venv built in {root}"
