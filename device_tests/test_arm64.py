"""The runtime on real arm64 code: Debian bookworm arm64 (Raspberry Pi OS's base) under qemu, with the
aarch64 tflite-runtime 2.14 wheel and the repo's current metalite.runtime (issue 5, part 2)."""
import subprocess
import time

import pytest

import envs
from devicekit import SCRIPTS, agreement, assert_agreement, load_result, output_scale, record


@pytest.fixture(scope="session")
def arm64_runs(arm64, bundles, task):
    cache = {}

    def get(name):
        if name not in cache:
            host, inside = envs.stage_in_rootfs(arm64["rootfs"], f"run-{name}", {
                "bundle": bundles[name], "task.npz": task / "task.npz", "device_run.py": SCRIPTS / "device_run.py"})
            cmd = arm64["runner"](["python3", f"{inside}/device_run.py", "--bundle", f"{inside}/bundle",
                                   "--task", f"{inside}/task.npz", "--out", f"{inside}/out", "--threads", "2"],
                                  {"PYTHONPATH": arm64["site"]})
            t = time.time()
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            if p.returncode != 0:
                pytest.fail(f"arm64 run failed ({arm64['mode']}, exit {p.returncode}):\n{p.stdout[-2000:]}\n"
                            f"{p.stderr[-3000:]}", pytrace=False)
            r = load_result(host / "out")
            r["wall_seconds"] = time.time() - t
            cache[name] = r
        return cache[name]
    return get


def test_arm64_adapt_predict(arm64_runs, bundles, arm64, results_dir):
    for name in bundles:
        r = arm64_runs(name)
        assert r["machine"] == "aarch64", r["machine"]
        assert r["backend"] == "tflite_runtime" and r["backend_version"] == "2.14.0"
        assert r["python"].startswith("3.11.") and r["numpy"].startswith("1.")  # Debian bookworm's
        assert r["tf"] == {"tensorflow_importable": False, "tf_modules_loaded": []}
        assert r["state_roundtrip"] is True and r["add_remove_pred_same"] >= 0.99
        assert r["runtime_file"].startswith(arm64["site"])
        record(results_dir, f"arm64-{name}", {
            "mode": arm64["mode"], "ms_per_image": round(r["ms_per_image"], 2), "fit_seconds": r["fit_seconds"],
            "threads": 2, "images": len(r["pred"]), "wall_seconds": round(r["wall_seconds"], 1),
            "note": "qemu user-mode emulation on x86: slower than a real Cortex-A53/A72"})


def test_arm64_agrees_with_x86(arm64_runs, x86_runs, bundles, results_dir):
    """Same bundle, same inputs, same tflite-runtime version: x86 and arm64 agree within the criterion."""
    for name, path in bundles.items():
        a = agreement(x86_runs("tflite", name), arm64_runs(name), output_scale(path))
        record(results_dir, f"agreement-x86-vs-arm64-{name}", a)
        assert_agreement(a, f"{name}: x86 vs arm64 tflite-runtime", trained=name != "tiny")
