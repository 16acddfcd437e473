"""Fixtures of the device tests: environments (built once per session, cached on disk), bundles, tasks.

Nothing here skips: a prerequisite that cannot be built fails the test that needs it with a message
saying what to install (see envs.py). Caches live in ``$METALITE_DEVICE_CACHE`` (default
``cache_root("device")``, ``~/.cache/metalite/device``); ``METALITE_REQUIRE_SHIPPED_BUNDLES=1`` makes the missing
``models/omniglot`` / ``models/glyphs`` / ``models/emoji`` an error instead of falling back to the tiny test bundle
(or its RGB twin).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import device_bundles as bundlelib  # noqa: E402
import envs  # noqa: E402
from devicekit import load_result, run_script  # noqa: E402


def _need(fn, *args):
    try:
        return fn(*args)
    except envs.EnvError as e:
        pytest.fail(f"device test prerequisite missing: {e}", pytrace=False)


# ------------------------------------------------------------------------------------ environments
def pytest_configure(config):
    """Show build progress live, past pytest's output capture."""
    capman = config.pluginmanager.getplugin("capturemanager")

    def write(msg):
        if capman is None:
            return envs.default_log_write(msg)
        with capman.global_and_fixture_disabled():
            envs.default_log_write(msg)

    envs.LOG_WRITE = write


@pytest.fixture(scope="session")
def device_cache() -> Path:
    return envs.cache_dir()


@pytest.fixture(scope="session")
def venvs():
    """{"tflite": python of the numpy<2 + tflite-runtime venv, "litert": numpy 2 + ai-edge-litert}."""
    out = {}

    def get(kind):
        if kind not in out:
            out[kind] = _need(envs.runtime_venv, kind)
        return out[kind]

    return get


@pytest.fixture(scope="session")
def arm64():
    """The arm64 Debian rootfs, a runner, and two Python stacks inside it: ``site`` (a PYTHONPATH with
    tflite-runtime + metalite.runtime, for Debian's python3 and numpy 1.24) and ``litert`` (a venv with
    numpy 2 + ai-edge-litert + metalite.runtime: ``{"python", "site"}``)."""
    t = time.time()
    rootfs = _need(envs.arm64_rootfs)
    site = _need(envs.arm64_site, rootfs)
    runner, mode = _need(envs.arm64_runner, rootfs)
    litert = _need(envs.arm64_litert_venv, rootfs, runner)
    envs.log(f"arm64 device ready ({mode}) in {time.time() - t:.0f} s")
    return {"rootfs": rootfs, "site": site, "litert": litert, "runner": runner, "mode": mode}


# ------------------------------------------------------------------------------------ data
def _src_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
            if "__pycache__" not in f.parts:
                h.update(f.read_bytes())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def bundles(device_cache) -> dict:
    """{name: bundle dir}: models/omniglot and models/glyphs when shipped, else the tiny test bundle."""
    shipped = bundlelib.shipped_bundles()
    if os.environ.get("METALITE_REQUIRE_SHIPPED_BUNDLES") == "1":
        missing = [n for n in bundlelib.SHIPPED if n not in shipped]
        if missing:
            pytest.fail(
                f"shipped bundles missing: {', '.join('models/' + n for n in missing)} "
                "(run the export step that produces them)",
                pytrace=False,
            )
    if shipped:
        return shipped
    try:
        return {"tiny": _tiny_bundle(device_cache, 1)}
    except (RuntimeError, FileNotFoundError) as e:
        pytest.fail(str(e), pytrace=False)


def _tiny_bundle(device_cache: Path, channels: int) -> Path:
    recipe = (
        bundlelib.TINY_RECIPE
        if channels == 1
        else {**bundlelib.TINY_RECIPE, "channels": channels, "size": bundlelib.TINY_RGB_SIZE}
    )
    key = envs.recipe_key(
        {
            **recipe,
            "src": _src_digest(
                envs.REPO / "export",
                envs.REPO / "runtime" / "head.py",
                envs.REPO / "training" / "models.py",
            ),
        }
    )
    out = device_cache / f"bundle-tiny{'' if channels == 1 else '-rgb'}-{key}"
    if not (out / "manifest.json").is_file():
        envs.log(
            f"building the tiny {'RGB ' if channels == 3 else ''}test bundle (TensorFlow, about 1 minute)"
        )
    return bundlelib.build_tiny_bundle(out, channels)


@pytest.fixture(scope="session")
def bundle(bundles) -> Path:
    """The main bundle of the tests: omniglot if shipped, else glyphs, else the tiny one."""
    for n in ("omniglot", "glyphs", "tiny"):
        if n in bundles:
            return bundles[n]


@pytest.fixture(scope="session")
def colour_bundle(device_cache) -> tuple:
    """(name, bundle dir) of an RGB bundle: models/emoji when shipped, else the tiny test bundle's RGB twin."""
    shipped = bundlelib.shipped_colour_bundle()
    if shipped is not None:
        return bundlelib.SHIPPED_COLOUR, shipped
    if os.environ.get("METALITE_REQUIRE_SHIPPED_BUNDLES") == "1":
        pytest.fail(
            f"shipped bundle missing: models/{bundlelib.SHIPPED_COLOUR} (run the export step that produces it)",
            pytrace=False,
        )
    try:
        return "tiny-rgb", _tiny_bundle(device_cache, 3)
    except (RuntimeError, FileNotFoundError) as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def colour_task(device_cache) -> Path:
    """The cross-artist colour task of the emoji fixture (10 concepts, 1 Noto support image each, 20 queries
    by Twemoji and OpenMoji): folders + task.npz of uint8 RGB arrays."""
    try:
        return bundlelib.make_colour_task(device_cache / "task-emoji-fixture-10w1s2q-v1")
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def task(device_cache) -> Path:
    """A 20-way 5-shot task from the Omniglot fixture with 10 queries per class (200): folders + task.npz."""
    try:
        return bundlelib.make_task(device_cache / "task-fixture-20w5s10q-v2")
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> Path:
    """Where measured numbers go (also copied to $METALITE_DEVICE_RESULTS if set)."""
    return tmp_path_factory.mktemp("device-results")


# ------------------------------------------------------------------------------------ running scripts
@pytest.fixture(scope="session")
def x86_run(venvs, tmp_path_factory):
    """device_run.py (public API + CLI) in a runtime-only venv: ``(kind, bundle dir, task dir) -> result``,
    cached per session."""
    cache = {}

    def get(kind, bundle, task):
        key = (kind, str(bundle), str(task))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"run-{kind}-{Path(bundle).name}")
            run_script(
                venvs(kind),
                "device_run.py",
                [
                    "--bundle",
                    bundle,
                    "--task",
                    Path(task) / "task.npz",
                    "--out",
                    out,
                    "--threads",
                    "2",
                    "--cli-task",
                    task,
                ],
            )
            cache[key] = load_result(out)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def x86_runs(x86_run, bundles, task):
    """device_run.py in each runtime-only venv on each gray bundle and the Omniglot task: ``(kind, name)``."""
    return lambda kind, name: x86_run(kind, bundles[name], task)
