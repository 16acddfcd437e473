"""The ``memory`` section of ``metalite bench``: peak RSS of a process that imports only ``metalite.runtime``.

A child process (started from a small launcher, so its ``ru_maxrss`` starts from a few MiB) loads the
bundle, adapts 20-way 5-shot and predicts, once per interpreter package available.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .fields import get

MEMORY_SCRIPT = r"""
import json, sys, time


def hwm_kib():
    # VmHWM: peak resident set of this process since exec (ru_maxrss may carry the forking parent's peak)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


import numpy as np
base = hwm_kib()
bundle, n_img = sys.argv[1], int(sys.argv[2])
from metalite.runtime import FewShotClassifier
t = time.perf_counter()
clf = FewShotClassifier(bundle, num_threads=1, delegate="cpu")
after_load = hwm_kib()
h, w, _ = clf.bundle.input_shape
rng = np.random.default_rng(0)
imgs = rng.integers(0, 256, size=(n_img, h, w), dtype=np.uint8)
labels = [i % 20 for i in range(n_img)]
clf.fit(imgs[:100], labels[:100])
pred = clf.predict(imgs)
print(json.dumps({"baseline_kib": base, "after_load_kib": after_load, "peak_kib": hwm_kib(), "backend": clf.backend,
                  "tensorflow_imported": "tensorflow" in sys.modules, "numpy": np.__version__,
                  "seconds": time.perf_counter() - t, "predicted": len(pred)}))
"""

# A small launcher process runs the measured child, so the child's ru_maxrss starts from the launcher's
# few MiB at fork time, not from the benchmark's own (TensorFlow-sized) resident set.
LAUNCHER = r"""
import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
if p.returncode:
    sys.stderr.write(p.stderr)
    sys.exit(p.returncode)
print(json.dumps({"ru_maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "child": json.loads(p.stdout.strip().splitlines()[-1])}))
"""


def _child_rss(python, args, env, cwd) -> tuple:
    """(ru_maxrss KiB of the child running ``args``, its JSON report), measured through LAUNCHER."""
    p = subprocess.run(
        [python, "-c", LAUNCHER, python, *args],
        capture_output=True,
        env=env,
        text=True,
        timeout=600,
        cwd=str(cwd),
    )
    if p.returncode != 0:
        raise RuntimeError((p.stderr.strip().splitlines() or ["?"])[-1][:300])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return int(r["ru_maxrss_kib"]), r["child"]


def memory_section(bundle_path, tmp: Path, tflite_python=None, images: int = 200) -> dict:
    """Peak RSS (ru_maxrss) of a runtime-only child process: load the bundle, adapt 20-way 5-shot, predict."""
    from .runtime_env import runtime_site

    site = runtime_site(Path(tmp).resolve())
    sec = {
        "what": f"child process importing only metalite.runtime (a copy of this one on PYTHONPATH): load the "
        f"bundle, fit 100 images (20 classes x 5), predict {images} images, 1 thread",
        "unit": "MiB",
        "runs": {},
    }
    runs = [("ai_edge_litert", sys.executable)]
    if tflite_python:
        runs.append(("tflite_runtime", tflite_python))
    for backend, py in runs:
        env = dict(os.environ, PYTHONPATH=str(site), METALITE_TFLITE=backend, PYTHONNOUSERSITE="1")
        try:
            peak, r = _child_rss(
                py, ["-c", MEMORY_SCRIPT, str(Path(bundle_path).resolve()), str(images)], env, site
            )
            sec["runs"][backend] = {
                "peak_rss_mib": peak / 1024,
                "vmhwm_mib": r["peak_kib"] / 1024,
                "python_numpy_baseline_mib": r["baseline_kib"] / 1024,
                "after_load_mib": r["after_load_kib"] / 1024,
                "numpy": r["numpy"],
                "tensorflow_imported": r["tensorflow_imported"],
                "seconds": r["seconds"],
                "python": py,
            }
        except Exception as e:  # noqa: BLE001
            sec["runs"][backend] = {"error": str(e)}
    return sec


# ----------------------------------------------------------------------------- report.md, README rows
def memory_lines(report) -> list:
    mem = report.get("memory", {})
    L = [
        "## memory",
        "",
        f"{mem.get('what')}. Peak RSS = `ru_maxrss` of the child (started from a small launcher "
        "process); VmHWM and the other columns are the child's own /proc/self/status high-water marks.",
        "",
        "| interpreter | peak RSS MiB | VmHWM MiB | python+numpy baseline MiB | after load MiB | numpy | TensorFlow imported |",
        "|---|---|---|---|---|---|---|",
    ]
    for be, r in (mem.get("runs") or {}).items():
        if "error" in r:
            L.append(f"| {be} | error: {r['error']} | | | | | |")
        else:
            L.append(
                f"| {be} | {r['peak_rss_mib']:.1f} | {r.get('vmhwm_mib', 0):.1f} | {r['python_numpy_baseline_mib']:.1f} "
                f"| {r['after_load_mib']:.1f} | {r['numpy']} | {r['tensorflow_imported']} |"
            )
    return L


def memory_readme_rows(report) -> list:
    """The README's peak-RSS row."""
    rows = []
    peak = get(report, "memory", "runs", "ai_edge_litert", "peak_rss_mib")
    if peak:
        rows.append(
            ("Peak RSS, runtime-only process (load, adapt, predict)", f"{peak:.0f} MiB", "", "")
        )
    return rows
