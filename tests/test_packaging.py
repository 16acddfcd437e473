"""One ``metalite.*`` namespace with nothing in the repository root shadowing it: a wheel of the repository,
installed into a fresh virtualenv, imports from there even when Python starts in the repository root."""
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    for folder in set(re.findall(r'"metalite\.[a-z_.]+":\s*"([a-z_]+)"', (ROOT / "setup.py").read_text())):
        shutil.copytree(ROOT / folder, dst / folder, ignore=ignore)
    return dst


def test_wheel_install_imports_its_own_runtime_from_the_repo_root(tmp_path):
    (tmp_path / "src").mkdir()
    src = _source_copy(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
          src], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("metalite-*.whl"))
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(tmp_path / "venv")
    py = tmp_path / "venv" / "bin" / "python"
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    site = tmp_path / "venv" / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    code = ("import metalite.runtime, metalite.tools.cli, metalite.tools.runtime_env as e, sys\n"
            "print(metalite.runtime.__file__)\n"
            f"print(e.runtime_site({str(tmp_path)!r}))\n")
    out = _run([py, "-c", code], cwd=ROOT, env=env).splitlines()  # Python puts the cwd, the repo root, first
    assert out[0] == str(site / "metalite" / "runtime" / "__init__.py")
    # the runtime-only site that `metalite bench` measures memory with comes from the installed package
    runtime_site = Path(out[1])
    assert (runtime_site / "metalite" / "runtime" / "classifier.py").is_file()
    assert not (runtime_site / "metalite" / "__init__.py").exists()
    probe = "import metalite.runtime as r, sys; print(r.__file__); print('tensorflow' in sys.modules)"
    out = _run([py, "-c", probe], cwd=tmp_path, env={**env, "PYTHONPATH": str(runtime_site)}).splitlines()
    assert out == [str(runtime_site / "metalite" / "runtime" / "__init__.py"), "False"]
