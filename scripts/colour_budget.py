#!/usr/bin/env python3
"""The device budget of bundles: backbone bytes, per-image time at batch 1 with their tta, runtime-only peak RSS.

    python scripts/colour_budget.py models/emoji models/omniglot [--rounds 7 --calls 100]

Time: ``FewShotClassifier(bundle, num_threads=1, cache_size=0).embed(image)`` on one 64 px RGB image (so
preprocessing and every shifted copy of test-time averaging are included), rounds interleaved over the
bundles; the median per call of each round, then the median over rounds. Peak RSS:
``metalite.bench.memory.memory_section`` (a child process importing only ``metalite.runtime``).
Prints JSON, with the load average before and after and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args(argv)

    from metalite.runtime import FewShotClassifier

    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    clfs = {
        b: FewShotClassifier(b, num_threads=1, delegate="cpu", cache_size=0) for b in args.bundles
    }
    load_before = os.getloadavg()
    rounds = {b: [] for b in clfs}
    for clf in clfs.values():
        clf.embed(img)  # warm-up
    for _ in range(args.rounds):
        for b, clf in clfs.items():
            times = []
            for _ in range(args.calls):
                t = time.perf_counter()
                clf.embed(img)
                times.append(time.perf_counter() - t)
            rounds[b].append(statistics.median(times))
    out = {
        "cpu": cpu_model(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "python": sys.version.split()[0],
        "bundles": {},
    }
    for b, clf in clfs.items():
        out["bundles"][b] = {
            "backend": clf.backend,
            "tta": clf.tta,
            "input_shape": list(clf.bundle.input_shape),
            "backbone_bytes": clf.bundle.backbone_path.stat().st_size,
            "ms_per_image_median": 1000 * statistics.median(rounds[b]),
            "ms_per_image_rounds": [round(1000 * r, 4) for r in rounds[b]],
        }
    if not args.no_memory:
        from metalite.bench.memory import memory_section

        with tempfile.TemporaryDirectory() as tmp:
            for b in clfs:
                out["bundles"][b]["memory"] = memory_section(b, Path(tmp))
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
