"""The runtime on real arm64 code: Debian bookworm arm64 (Raspberry Pi OS's base) under qemu as a Cortex-A72,
with the repo's current metalite.runtime on two stacks: Debian's python3 + numpy 1.24 + the aarch64
tflite-runtime 2.14 wheel (Raspberry Pi OS bookworm's stack), and a venv with numpy 2 + the aarch64 ai-edge-litert
wheel (the recommended one). Both predict as on x86, gray bundles and an RGB one; their relative cost is measured
interleaved, labelled as emulated."""

import subprocess
import time

import pytest

import envs
from devicekit import (
    SCRIPTS,
    agreement,
    assert_agreement,
    assert_colour_state,
    load_result,
    output_scale,
    record,
)

from metalite.bench import timing  # self-contained timing worker, also run inside the rootfs

pytestmark = pytest.mark.device  # every test here needs a device environment

STACKS = {"tflite": ("tflite_runtime", "1."), "litert": ("ai_edge_litert", "2.")}


def _python(arm64, kind):
    """(python inside the rootfs, extra environment) of one stack."""
    if kind == "litert":
        return arm64["litert"]["python"], {"PYTHONPATH": arm64["litert"]["site"]}
    return "python3", {"PYTHONPATH": arm64["site"]}


def _xnnpack_expected(arm64) -> bool:
    return "no /sys" not in arm64["mode"]


def _names(bundles, kind):
    """Every bundle on the Pi OS stack; the main one only on the litert venv (emulation is slow)."""
    return (
        list(bundles)
        if kind == "tflite"
        else [next(n for n in ("omniglot", "glyphs", "tiny") if n in bundles)]
    )


@pytest.fixture(scope="session")
def arm64_run(arm64):
    """device_run.py on the arm64 device: ``(kind, name, bundle dir, task.npz) -> result``, cached per session."""
    cache = {}

    def get(kind, name, bundle, task_npz):
        if (name, kind) not in cache:
            host, inside = envs.stage_in_rootfs(
                arm64["rootfs"],
                f"run-{name}-{kind}",
                {
                    "bundle": bundle,
                    "task.npz": task_npz,
                    "device_run.py": SCRIPTS / "device_run.py",
                },
            )
            py, env = _python(arm64, kind)
            cmd = arm64["runner"](
                [
                    py,
                    f"{inside}/device_run.py",
                    "--bundle",
                    f"{inside}/bundle",
                    "--task",
                    f"{inside}/task.npz",
                    "--out",
                    f"{inside}/out",
                    "--threads",
                    "2",
                ],
                env,
            )
            t = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            if p.returncode != 0:
                pytest.fail(
                    f"arm64 {kind} run failed ({arm64['mode']}, exit {p.returncode}):\n{p.stdout[-2000:]}\n"
                    f"{p.stderr[-3000:]}",
                    pytrace=False,
                )
            r = load_result(host / "out")
            r["wall_seconds"] = time.time() - t
            cache[name, kind] = r
        return cache[name, kind]

    return get


@pytest.fixture(scope="session")
def arm64_runs(arm64_run, bundles, task):
    """device_run.py on the arm64 device on a gray bundle and the Omniglot task: ``(name, kind="tflite")``."""
    return lambda name, kind="tflite": arm64_run(kind, name, bundles[name], task / "task.npz")


@pytest.mark.parametrize("kind", sorted(STACKS))
def test_arm64_adapt_predict(arm64_runs, bundles, arm64, results_dir, kind):
    backend, numpy_major = STACKS[kind]
    for name in _names(bundles, kind):
        r = arm64_runs(name, kind)
        assert r["machine"] == "aarch64", r["machine"]
        assert r["backend"] == backend and r["numpy"].startswith(numpy_major), (
            r["backend"],
            r["numpy"],
        )
        if kind == "tflite":
            assert r["backend_version"] == "2.14.0"
        assert r["python"].startswith("3.11.")  # Debian bookworm's
        assert r["tf"] == {"tensorflow_importable": False, "tf_modules_loaded": []}
        assert r["state_roundtrip"] is True and r["add_remove_pred_same"] >= 0.99
        assert r["runtime_file"].startswith(
            arm64["litert"]["site"] if kind == "litert" else arm64["site"]
        )
        acc = r["acceleration"]
        if _xnnpack_expected(arm64):  # int8 on XNNPACK on both stacks, as on x86
            assert acc["delegate"] == "xnnpack" and acc["delegated"] in (
                "whole graph",
                "partial",
            ), acc
        record(
            results_dir,
            f"arm64-{kind}-{name}",
            {
                "mode": arm64["mode"],
                "ms_per_image": round(r["ms_per_image"], 2),
                "fit_seconds": r["fit_seconds"],
                "threads": 2,
                "images": len(r["pred"]),
                "wall_seconds": round(r["wall_seconds"], 1),
                "backend": f"{r['backend']} {r['backend_version']}",
                "numpy": r["numpy"],
                "acceleration": acc,
                "note": "emulated: qemu user-mode (Cortex-A72 model) on x86, not a Pi timing",
            },
        )


@pytest.mark.parametrize("kind", sorted(STACKS))
def test_arm64_agrees_with_x86(arm64_runs, x86_runs, bundles, results_dir, kind):
    """Same bundle, same inputs, same interpreter package: x86 and arm64 agree within the criterion."""
    for name in _names(bundles, kind):
        a = agreement(x86_runs(kind, name), arm64_runs(name, kind), output_scale(bundles[name]))
        record(results_dir, f"agreement-x86-vs-arm64-{kind}-{name}", a)
        assert_agreement(a, f"{name}: x86 vs arm64 {STACKS[kind][0]}", trained=name != "tiny")


@pytest.mark.parametrize("kind", sorted(STACKS))
def test_arm64_colour_bundle_adapts_keeps_colour_and_agrees_with_x86(
    arm64_run, x86_run, arm64, colour_bundle, colour_task, results_dir, kind
):
    """An RGB bundle on the device, from uint8 RGB arrays (no Pillow there): it adapts and predicts as on x86 with
    the same interpreter package, and the state it saves and loads again keeps the colour support images."""
    backend, numpy_major = STACKS[kind]
    name, path = colour_bundle
    r = arm64_run(kind, name, path, colour_task / "task.npz")
    assert r["machine"] == "aarch64" and r["python"].startswith("3.11.")
    assert r["backend"] == backend and r["numpy"].startswith(numpy_major), (
        r["backend"],
        r["numpy"],
    )
    if kind == "tflite":
        assert r["backend_version"] == "2.14.0"
    assert r["tf"] == {"tensorflow_importable": False, "tf_modules_loaded": []}
    assert len(r["pred"]) == 20 and len(r["classes"]) == 10
    assert r["state_roundtrip"] is True and r["add_remove_pred_same"] >= 0.99
    assert_colour_state(r, colour_task)
    acc = r["acceleration"]
    if _xnnpack_expected(arm64):
        assert acc["delegate"] == "xnnpack" and acc["delegated"] in ("whole graph", "partial"), acc
    a = agreement(x86_run(kind, path, colour_task), r, output_scale(path))
    record(results_dir, f"agreement-x86-vs-arm64-{kind}-{name}", a)
    record(
        results_dir,
        f"arm64-{kind}-{name}",
        {
            "mode": arm64["mode"],
            "ms_per_image": round(r["ms_per_image"], 2),
            "fit_seconds": r["fit_seconds"],
            "threads": 2,
            "images": len(r["pred"]),
            "accuracy": r["accuracy"],
            "wall_seconds": round(r["wall_seconds"], 1),
            "backend": f"{r['backend']} {r['backend_version']}",
            "numpy": r["numpy"],
            "note": "emulated: qemu user-mode (Cortex-A72 model) on x86, not a Pi timing",
        },
    )
    assert_agreement(a, f"{name}: x86 vs arm64 {backend}", trained=name != "tiny-rgb")


def test_arm64_interpreter_cost(arm64, bundle, results_dir):
    """ai-edge-litert vs tflite-runtime (as the runtime opens it, and with its defaults) on the arm64 device,
    one worker process each, timed in interleaved rounds: batch 1, 1 thread, the bundle's int8 backbone.
    Recorded, labelled emulated; not asserted (qemu's cost per instruction is not a Cortex-A72's)."""
    host, inside = envs.stage_in_rootfs(
        arm64["rootfs"],
        "interp-cost",
        {
            "backbone.tflite": bundle / "backbone.tflite",
            "timing.py": envs.REPO / "bench" / "timing.py",
        },
    )
    stacks = {
        "ai_edge_litert": ("litert", {}),
        "tflite_runtime": ("tflite", {}),
        "tflite_runtime_builtin": ("tflite", {"METALITE_XNNPACK": "0"}),
    }
    workers = {}
    try:
        for label, (kind, extra) in stacks.items():
            py, env = _python(arm64, kind)
            cmd = arm64["runner"](
                [py, f"{inside}/timing.py", "--serve", "--backend", STACKS[kind][0]],
                {**env, **extra},
            )
            workers[label] = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        got = timing.interleaved(
            workers, {"int8": f"{inside}/backbone.tflite"}, [(1, 1)], rounds=3, calls=10, warmup=2
        )
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait(timeout=120)
    res = got["results"]["int8"]
    assert all("error" not in res[k] for k in stacks), res
    if _xnnpack_expected(arm64):
        assert "XNNPACK delegate (whole graph" in res["ai_edge_litert"]["how"], res[
            "ai_edge_litert"
        ]["how"]
        assert "enabled by metalite" in res["tflite_runtime"]["how"], res["tflite_runtime"]["how"]
    assert "no delegate" in res["tflite_runtime_builtin"]["how"], res["tflite_runtime_builtin"][
        "how"
    ]
    base = res["ai_edge_litert"]["b1_t1"]["round_medians_ms"]
    ratios = {
        k: sorted(round(x / b, 2) for x, b in zip(res[k]["b1_t1"]["round_medians_ms"], base))
        for k in stacks
    }
    record(
        results_dir,
        "arm64-interpreter-cost",
        {
            "label": "EMULATED (qemu-user, Cortex-A72 model, on x86): relative cost only, not a Pi timing",
            "mode": arm64["mode"],
            "model": bundle.name + "/backbone.tflite",
            "batch": 1,
            "threads": 1,
            "rounds": 3,
            "calls_per_round": 10,
            "ms_per_image_median": {k: round(res[k]["b1_t1"]["median_ms"], 3) for k in stacks},
            "ratio_to_ai_edge_litert_per_round": ratios,
            "how": {k: res[k]["how"] for k in stacks},
        },
    )
