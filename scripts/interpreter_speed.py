"""Per-image backbone time on each interpreter stack, interleaved round by round (README, "Install").

    python scripts/interpreter_speed.py models/omniglot --float-model /tmp/float.tflite \
        [--worker "LABEL=PYTHON:BACKEND[:ENV=VALUE,...]" ...] [--rounds 7 --calls 100]

Each worker is a ``bench/timing.py --serve`` process in its own environment, opening models through
the repo's current ``metalite.runtime`` (so tflite-runtime gets the int8 XNNPACK delegate as on a device;
``METALITE_XNNPACK=0`` in its ENV shows the interpreter's defaults). Without ``--worker``: the runtime-only
venvs of device_tests (tflite-runtime 2.14 + numpy<2, ai-edge-litert + numpy 2), the former also with its
defaults. ``--float-model`` missing is written first (needs TensorFlow): a float TFLite of the bundle's
backbone architecture (``metalite.training.models``, random weights: the time does not depend on them).
Prints a Markdown table: medians, and ratios to the first worker's int8 time in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from metalite.bench import timing

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "device_tests"))


def make_float_model(bundle: Path, out: Path) -> None:
    from metalite.export.tflite import convert_float
    from metalite.training.models import build_backbone

    man = json.loads((bundle / "manifest.json").read_text())
    cfg = (man.get("training") or {}).get("backbone") or {}
    out.write_bytes(convert_float(build_backbone(cfg, tuple(man["input"]["shape"]))))


def default_workers() -> list:
    import envs

    tfl, lit = envs.runtime_venv("tflite"), envs.runtime_venv("litert")
    return [
        f"ai-edge-litert={lit}:ai_edge_litert",
        f"tflite-runtime (metalite runtime)={tfl}:tflite_runtime",
        f"tflite-runtime (interpreter defaults)={tfl}:tflite_runtime:METALITE_XNNPACK=0",
    ]


def start(spec: str, site: Path):
    label, _, rest = spec.partition("=")
    python, backend, *env = rest.split(":")
    extra = dict(kv.split("=", 1) for e in env for kv in e.split(",") if kv)
    proc = subprocess.Popen(
        [python, str(REPO / "bench" / "timing.py"), "--serve", "--backend", backend],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(site), PYTHONNOUSERSITE="1", **extra),
        cwd=str(site),
    )
    return label, proc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument(
        "--float-model",
        type=Path,
        required=True,
        help="float TFLite to compare (written if missing)",
    )
    ap.add_argument(
        "--worker", action="append", help="LABEL=PYTHON:BACKEND[:ENV=VALUE,...]; repeatable"
    )
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=100)
    a = ap.parse_args(argv)
    if not a.float_model.exists():
        make_float_model(a.bundle, a.float_model)
    models = {
        "int8": str((a.bundle / "backbone.tflite").resolve()),
        "float": str(a.float_model.resolve()),
    }
    with tempfile.TemporaryDirectory() as td:
        site = Path(td)
        (site / "metalite").mkdir()
        for name in ("runtime", "common"):
            shutil.copytree(REPO / name, site / "metalite" / name)
        workers = dict(start(w, site) for w in (a.worker or default_workers()))
        load = [open("/proc/loadavg").read().split()[0]]
        try:
            got = timing.interleaved(workers, models, [(1, 1)], a.rounds, a.calls, 10)
        finally:
            for p in workers.values():
                p.stdin.close()
                p.wait(timeout=60)
        load.append(open("/proc/loadavg").read().split()[0])
    res = got["results"]
    ref = np.asarray(res["int8"][next(iter(workers))]["b1_t1"]["round_medians_ms"])
    print(
        f"batch 1, 1 thread, {a.rounds} interleaved rounds x {a.calls} calls; load average {load[0]} -> {load[1]}\n"
    )
    print("| interpreter | int8 | float | int8 speed-up over float |\n|---|---|---|---|")
    for w in workers:
        if any("error" in res[m][w] for m in models):
            print(f"| {w} | {' / '.join(res[m][w].get('error', '') for m in models)} | | |")
            continue
        cells = []
        for m in models:
            r = res[m][w]["b1_t1"]
            cells.append(
                f"{r['median_ms']:.4f} ms ({np.median(np.asarray(r['round_medians_ms']) / ref):.2f}×)"
            )
        up = np.median(
            np.asarray(res["float"][w]["b1_t1"]["round_medians_ms"])
            / np.asarray(res["int8"][w]["b1_t1"]["round_medians_ms"])
        )
        print(f"| {w} | {cells[0]} | {cells[1]} | {up:.2f}× |")
    print()
    for w in workers:
        print(f"- {w}: {res['int8'][w].get('how') or res['int8'][w].get('error')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
