"""Fixtures of the device tests: environments (built once per session, cached on disk), bundles, tasks.

Nothing here skips: a prerequisite that cannot be built fails the test that needs it with a message
saying what to install (see envs.py). Caches live in ``$METALITE_DEVICE_CACHE`` (default
``~/.cache/metalite/device``); ``METALITE_REQUIRE_SHIPPED_BUNDLES=1`` makes the missing
``models/omniglot`` / ``models/glyphs`` an error instead of falling back to the tiny test bundle.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bundles as bundlelib  # noqa: E402
import envs  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
PROFILES = json.loads((HERE / "profiles.json").read_text())["profiles"]
AGREEMENT = json.loads((HERE / "profiles.json").read_text())["agreement"]


def _need(fn, *args):
    try:
        return fn(*args)
    except envs.EnvError as e:
        pytest.fail(f"device test prerequisite missing: {e}", pytrace=False)


# ------------------------------------------------------------------------------------ environments
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
    """The arm64 Debian rootfs, a PYTHONPATH inside it with tflite-runtime + metalite.runtime, a runner."""
    t = time.time()
    rootfs = _need(envs.arm64_rootfs)
    site = _need(envs.arm64_site, rootfs)
    runner, mode = _need(envs.arm64_runner, rootfs)
    envs.log(f"arm64 device ready ({mode}) in {time.time() - t:.0f} s")
    return {"rootfs": rootfs, "site": site, "runner": runner, "mode": mode}


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
            pytest.fail(f"shipped bundles missing: {', '.join('models/' + n for n in missing)} "
                        "(run the export step that produces them)", pytrace=False)
    if shipped:
        return shipped
    key = envs.recipe_key({**bundlelib.TINY_RECIPE, "src": _src_digest(
        envs.REPO / "export", envs.REPO / "runtime" / "head.py", envs.REPO / "training" / "models.py")})
    out = device_cache / f"bundle-tiny-{key}"
    if not (out / "manifest.json").is_file():
        envs.log("building the tiny test bundle (TensorFlow, about 1 minute)")
    try:
        return {"tiny": bundlelib.build_tiny_bundle(out)}
    except (RuntimeError, FileNotFoundError) as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def bundle(bundles) -> Path:
    """The main bundle of the tests: omniglot if shipped, else glyphs, else the tiny one."""
    for n in ("omniglot", "glyphs", "tiny"):
        if n in bundles:
            return bundles[n]


@pytest.fixture(scope="session")
def task(device_cache) -> Path:
    """A 20-way 5-shot task from Omniglot with 10 queries per class (200): folders + task.npz."""
    try:
        return bundlelib.make_task(device_cache / "task-omniglot-20w5s10q-v1")
    except FileNotFoundError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory) -> Path:
    """Where measured numbers go (also copied to $METALITE_DEVICE_RESULTS if set)."""
    return tmp_path_factory.mktemp("device-results")


def record(results_dir: Path, name: str, data: dict) -> None:
    """Write measured numbers as JSON and print them (visible with -s or in the report)."""
    text = json.dumps(data, indent=1, sort_keys=True)
    (results_dir / f"{name}.json").write_text(text)
    extra = os.environ.get("METALITE_DEVICE_RESULTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        (Path(extra) / f"{name}.json").write_text(text)
    envs.log(f"{name}: {json.dumps(data, sort_keys=True)}")


# ------------------------------------------------------------------------------------ running scripts
def run_script(python, script: str, args: list, *, timeout: float = 600, preexec_fn=None, env=None,
               check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(python), str(SCRIPTS / script), *map(str, args)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout,
                       preexec_fn=preexec_fn, env=env, cwd="/")  # not the repo: its metalite/ would shadow
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}",
                    pytrace=False)
    return p


def load_result(out: Path) -> dict:
    import numpy as np

    res = json.loads((out / "result.json").read_text())
    with np.load(out / "result.npz") as z:
        res["proba_array"], res["embeddings"] = z["proba"], z["embeddings"]
    return res


@pytest.fixture(scope="session")
def x86_runs(venvs, bundles, task, tmp_path_factory):
    """device_run.py (public API + CLI) in each runtime-only venv on each bundle; cached per session."""
    cache = {}

    def get(kind, name):
        if (kind, name) not in cache:
            out = tmp_path_factory.mktemp(f"run-{kind}-{name}")
            run_script(venvs(kind), "device_run.py",
                       ["--bundle", bundles[name], "--task", task / "task.npz", "--out", out,
                        "--threads", "2", "--cli-task", task])
            cache[kind, name] = load_result(out)
        return cache[kind, name]
    return get


def output_scale(bundle_dir: Path) -> float:
    return float(json.loads((bundle_dir / "manifest.json").read_text())["output"]["quantization"]["scale"])


def agreement(ref: dict, other: dict, scale: float) -> dict:
    """How far two runs on the same inputs are apart (see profiles.json "agreement")."""
    import numpy as np

    pa, pb = ref["proba_array"], other["proba_array"]
    same = np.array([a == b for a, b in zip(ref["pred"], other["pred"])])
    top2 = np.sort(pa, axis=1)[:, -2:]
    gap = top2[:, 1] - top2[:, 0]
    return {
        "n": int(len(same)),
        "labels_agree": float(same.mean()),
        "flips_gaps": [float(g) for g in gap[~same]],
        "proba_max_abs": float(np.abs(pa - pb).max()),
        "embedding_max_lsb": float(np.abs(ref["embeddings"] - other["embeddings"]).max() / scale),
    }


def assert_agreement(a: dict, what: str, trained: bool) -> None:
    """The criterion of profiles.json "agreement"; the overall label rate applies to trained bundles
    (the untrained tiny test bundle has many near-ties; there only the near-tie rule holds)."""
    c = AGREEMENT
    problems = []
    if trained and a["labels_agree"] < c["labels_min_agreement"]:
        problems.append(f"labels agree on {a['labels_agree']:.3f} < {c['labels_min_agreement']}")
    if any(g > c["flip_max_top2_gap"] for g in a["flips_gaps"]):
        problems.append(f"a label differs where the reference was not a near-tie (top-2 gaps {a['flips_gaps']})")
    if a["proba_max_abs"] > c["proba_max_abs"]:
        problems.append(f"probabilities differ by {a['proba_max_abs']:.4f} > {c['proba_max_abs']}")
    if a["embedding_max_lsb"] > c["embedding_max_lsb"] + 1e-3:
        problems.append(f"int8 embeddings differ by {a['embedding_max_lsb']:.2f} steps > {c['embedding_max_lsb']}")
    assert not problems, f"{what}: " + "; ".join(problems) + f" ({a})"
