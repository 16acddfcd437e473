"""One ``metalite.*`` namespace with nothing in the repository root shadowing it: a wheel of the repository,
installed into a fresh virtualenv, imports from there even when Python starts in the repository root."""

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from repo_paths import REPO

pytestmark = (
    pytest.mark.slow
)  # every test builds a wheel or a fresh virtualenv and pip-installs into it

ROOT = REPO
TIMEOUT = 600


def _run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=TIMEOUT, **kw)
    assert p.returncode == 0, f"{cmd}: {p.stdout[-2000:]}{p.stderr[-2000:]}"
    return p.stdout


def _source_copy(dst: Path) -> Path:
    """What building a wheel reads, copied (the build writes build/ and *.egg-info next to setup.py)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dst / name)
    for folder in set(
        re.findall(r'"metalite\.[a-z_.]+":\s*"([a-z_]+)"', (ROOT / "setup.py").read_text())
    ):
        shutil.copytree(ROOT / folder, dst / folder, ignore=ignore)
    return dst


def test_wheel_install_imports_its_own_runtime_from_the_repo_root(tmp_path):
    (tmp_path / "src").mkdir()
    src = _source_copy(tmp_path / "src")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            tmp_path / "dist",
            src,
        ],
        cwd=tmp_path,
    )
    wheel = next((tmp_path / "dist").glob("metalite-*.whl"))
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(tmp_path / "venv")
    py = tmp_path / "venv" / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    site = (
        tmp_path
        / "venv"
        / "lib"
        / f"python{sys.version_info[0]}.{sys.version_info[1]}"
        / "site-packages"
    )
    code = (
        "import metalite.runtime, metalite.tools.cli, metalite.bench.runtime_env as e, sys\n"
        "print(metalite.runtime.__file__)\n"
        f"print(e.runtime_site({str(tmp_path)!r}))\n"
    )
    out = _run(
        [py, "-c", code], cwd=ROOT, env=env
    ).splitlines()  # Python puts the cwd, the repo root, first
    assert out[0] == str(site / "metalite" / "runtime" / "__init__.py")
    # the runtime-only site that `metalite bench` measures memory with comes from the installed package
    runtime_site = Path(out[1])
    assert (runtime_site / "metalite" / "runtime" / "classifier.py").is_file()
    assert (
        runtime_site / "metalite" / "common" / "progress.py"
    ).is_file()  # what the runtime imports
    assert not (runtime_site / "metalite" / "__init__.py").exists()
    probe = (
        "import metalite.runtime as r, sys; print(r.__file__); print('tensorflow' in sys.modules)"
    )
    out = _run(
        [py, "-c", probe], cwd=tmp_path, env={**env, "PYTHONPATH": str(runtime_site)}
    ).splitlines()
    assert out == [str(runtime_site / "metalite" / "runtime" / "__init__.py"), "False"]


# ----------------------------------------------------------------------------- the wheel and the device folder
def _wheel_members(wheel: Path) -> dict:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_the_wheel_holds_the_packages_and_nothing_else_with_the_right_metadata(tmp_path):
    from metalite.runtime.version import __version__
    from metalite.tools.device_package import build_wheel, package_folders

    wheel = build_wheel(tmp_path)
    assert (
        wheel.name == f"metalite-{__version__}-py3-none-any.whl"
    )  # pure Python: x86-64 and aarch64 alike
    files = _wheel_members(wheel)
    info = f"metalite-{__version__}.dist-info/"
    code = [n for n in files if not n.startswith(info)]
    folders = package_folders(ROOT)
    assert (
        sorted({n.split("/")[1] for n in code})
        == folders
        == ["bench", "common", "export", "fleet", "pipelines", "runtime", "tools", "training"]
    )
    assert (
        all(n.startswith("metalite/") for n in code) and "metalite/__init__.py" not in files
    )  # a namespace
    assert [n for n in code if not n.endswith(".py")] == [
        "metalite/runtime/webui/page.html",
        "metalite/tools/device_install.sh",
    ]
    assert not [
        n
        for n in files
        if "tests/" in n
        or n.split("/")[-1].startswith(("test_", "conftest"))
        or n.endswith((".tflite", ".npz", ".zip", ".png", ".json"))
    ]  # no tests, no models, no data
    for folder in folders:  # every module of the checkout is in it
        have = {n for n in code if n.startswith(f"metalite/{folder}/") and n.endswith(".py")}
        assert have == {
            f"metalite/{p.relative_to(ROOT).as_posix()}"
            for p in (ROOT / folder).rglob("*.py")
            if "__pycache__" not in p.parts
        }
    assert (
        b"Root-Is-Purelib: true" in files[info + "WHEEL"]
        and b"Tag: py3-none-any" in files[info + "WHEEL"]
    )
    assert b"metalite = metalite.tools.cli:main" in files[info + "entry_points.txt"]
    meta = files[info + "METADATA"].decode()
    assert f"\nVersion: {__version__}\n" in meta
    requires = {}
    for line in re.findall(r"^Requires-Dist: (.+)$", meta, re.M):
        req, _, marker = line.partition(";")
        extra = re.search(r'extra == "([a-z]+)"', marker)
        requires.setdefault(extra.group(1) if extra else "", set()).add(
            req.strip().replace(" ", "")
        )
    assert requires[""] == {"numpy>=1.21", "click>=7"}  # the runtime needs nothing else
    assert requires["litert"] == {"ai-edge-litert"} and requires["tflite"] == {
        "tflite-runtime",
        "numpy<2",
    }
    assert requires["images"] == {"pillow"} and requires["sync"] == {"cryptography>=3.4"}
    assert {"fastapi>=0.100", "uvicorn>=0.23"} <= requires[
        "serve"
    ] and "tensorflow-cpu==2.21.0" in requires["train"]


def _sh(cmd, env, cwd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=cwd)


def test_package_folder_installs_with_its_script_and_refuses_a_damaged_copy(tmp_path):
    """``metalite package`` -> ``sh install.sh`` (venv, pip, checksums, device install) -> device adapt/predict,
    on this machine (device_tests/test_pi_install.py does the same on the emulated Pi)."""
    from click.testing import CliRunner

    from metalite.tools.cli import main

    out = tmp_path / "metalite-device"
    r = CliRunner().invoke(main, ["package", str(ROOT / "models" / "omniglot"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    sums = dict(
        reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines()
    )
    assert sorted(sums) == sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.name != "SHA256SUMS"
    )
    assert (
        "install.sh" in sums
        and "bundle/manifest.json" in sums
        and any(k.endswith(".whl") for k in sums)
    )

    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    data = bytearray((damaged / "bundle" / "head.npz").read_bytes())
    data[100] ^= 1
    (damaged / "bundle" / "head.npz").write_bytes(bytes(data))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(tmp_path), PYTHON=sys._base_executable)
    p = _sh(["sh", str(damaged / "install.sh")], env, tmp_path)
    assert p.returncode == 1 and "does not match SHA256SUMS" in p.stderr, p.stderr
    assert not (tmp_path / "metalite").exists()  # nothing installed

    p = _sh(["sh", str(out / "install.sh")], env, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    metalite = tmp_path / "metalite" / "bin" / "metalite"
    home = tmp_path / "metalite-home"
    assert json.loads((home / "current.json").read_text())["version"] == 1
    support = tmp_path / "support"
    for k in range(2):
        (support / f"bar{k}").mkdir(parents=True)
        for i in range(2):
            _bar_png(support / f"bar{k}" / f"{i}.png", k, shift=i)
    _bar_png(tmp_path / "x.png", 1, shift=2)
    p = _sh([metalite, "device", "adapt", "support", "--home", home], env, tmp_path)
    assert p.returncode == 0 and "2 classes learned" in p.stdout, p.stdout + p.stderr
    p = _sh([metalite, "device", "predict", "x.png", "--home", home, "--json"], env, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)[0]["label"] == "bar1"
    p = _sh([metalite, "--version"], env, tmp_path)
    from metalite.runtime.version import __version__

    assert p.returncode == 0 and p.stdout.strip() == f"metalite, version {__version__}", p.stdout
    p = _sh(["sh", str(out / "install.sh")], env, tmp_path)  # again: the same bundle stays v1
    assert p.returncode == 0 and json.loads((home / "current.json").read_text())["version"] == 1, (
        p.stderr
    )


def _bar_png(path: Path, k: int, shift: int) -> None:
    import numpy as np
    from PIL import Image

    img = np.full((28, 28), 255, np.uint8)
    img[3 + 10 * k + shift : 7 + 10 * k + shift, 4:24] = 0
    Image.fromarray(img).save(path)


def test_the_git_url_line_installs_the_committed_package(tmp_path):
    """README's ``pip install "metalite[...] @ git+URL"``, with this repository as the URL (``file://localhost``:
    bookworm's pip 23 refuses ``file:///``): pip clones HEAD and builds the same package."""
    if (
        shutil.which("git") is None
        or subprocess.run(["git", "-C", ROOT, "rev-parse"], capture_output=True).returncode
    ):
        raise AssertionError("git and a git checkout are needed for this test")
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(tmp_path / "venv")
    py = tmp_path / "venv" / "bin" / "python"
    _run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            f"metalite[litert,images] @ git+file://localhost{ROOT}",
        ],
        cwd=tmp_path,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = _run(
        [
            py,
            "-c",
            "import metalite.tools.device_package as d; print(d.INSTALL_SCRIPT.is_file(), d.__file__)",
        ],
        cwd=tmp_path,
        env=env,
    ).split()
    assert out[0] == "True" and out[1].startswith(str(tmp_path / "venv")), out
    from metalite.runtime.version import __version__

    assert (
        _run([tmp_path / "venv" / "bin" / "metalite", "--version"], env=env).strip()
        == f"metalite, version {__version__}"
    )


def test_the_one_venv_builder_marks_only_finished_venvs(tmp_path):
    """``build_venv`` (``metalite bench``'s tflite-runtime venv and the device tests' venvs): a built venv runs
    and has its marker; a failed pip leaves nothing half-built behind and says why in one line."""
    from metalite.bench.runtime_env import COMPLETE, VenvError, build_venv

    said = []
    py = build_venv(tmp_path / "ok", [], say=said.append, marker="recipe")
    assert (tmp_path / "ok" / COMPLETE).read_text() == "recipe" and said and "pip only" in said[0]
    assert _run([py, "-c", "import sys; print(sys.prefix)"]).strip() == str(tmp_path / "ok")
    with pytest.raises(VenvError) as e:
        build_venv(tmp_path / "bad", [str(tmp_path / "no-such-project")], say=said.append)
    assert "\n" not in str(e.value) and not (tmp_path / "bad").exists()
