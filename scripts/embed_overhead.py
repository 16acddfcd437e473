"""The runtime's own cost at batch 1: ``FewShotClassifier.embed`` of one image against a raw ``invoke``.

    python scripts/embed_overhead.py models/omniglot models/omniglot-fast [--rounds 15 --calls 500] [--json OUT]

For each bundle, one process holds a classifier (1 thread, ``tta=0``, ``cache_size=0``) and times, round by
round in a shuffled order: ``interpreter.invoke()`` alone on its (already set) input; ``set_tensor`` +
``invoke`` + ``get_tensor``; the runtime's pieces (``as_model_input``, ``Embedder``); and ``embed`` of one
uint8 image at the model's size (so no resampling), also with shift averaging (``tta=8``: the image and 8
shifted copies in one invoke). Times are this thread's CPU time per call (``time.thread_time``: the
interpreter runs in the calling thread, and a busy machine's preemptions are left out). The ratios (embed /
invoke, tta 8 / tta 0) are taken within each round, then the median over rounds. Prints Markdown naming the
processor (``bench/machine.py``) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _per_call_ms(f, calls: int) -> float:
    t0 = time.thread_time()
    for _ in range(calls):
        f()
    return (time.thread_time() - t0) / calls * 1e3


def variants(bundle: Path) -> dict:
    """name -> zero-argument function, all on one classifier of ``bundle``."""
    from metalite.runtime.classifier import FewShotClassifier
    from metalite.runtime.images import as_model_input

    clf = FewShotClassifier(str(bundle), num_threads=1, delegate="cpu", cache_size=0, tta=0)
    e, it = clf.embedder, clf.embedder.interpreter
    h, w = clf.bundle.input_shape[:2]
    img = np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
    x = as_model_input(img, clf.bundle.input_shape, clf.bundle.preprocess)
    clf.embed(img)  # batch 1 allocated
    ii, oi = e._in["index"], e._out["index"]
    q = it.get_tensor(ii)

    def set_invoke_get():
        it.set_tensor(ii, q)
        it.invoke()
        return it.get_tensor(oi)

    tta8 = FewShotClassifier(str(bundle), num_threads=1, delegate="cpu", cache_size=0, tta=8)
    tta8.embed(img)
    return {
        "invoke": it.invoke,
        "set_tensor+invoke+get_tensor": set_invoke_get,
        "as_model_input": lambda: as_model_input(
            img, clf.bundle.input_shape, clf.bundle.preprocess
        ),
        "Embedder (quantize, invoke, dequantize)": lambda: e(x),
        "embed": lambda: clf.embed(img),
        "embed, tta 8": lambda: tta8.embed(img),
    }


def measure(bundle: Path, rounds: int, calls: int, seed: int = 0) -> dict:
    fns = variants(bundle)
    times = {k: [] for k in fns}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(fns)
        rng.shuffle(order)
        for k in order:
            times[k].append(_per_call_ms(fns[k], calls))

    def ratio(a, b):
        r = [x / y for x, y in zip(times[a], times[b])]
        return {
            "median": float(np.median(r)),
            "q1": float(np.percentile(r, 25)),
            "q3": float(np.percentile(r, 75)),
        }

    return {
        "median_ms": {k: float(np.median(v)) for k, v in times.items()},
        "times_ms": times,
        "embed_over_invoke": ratio("embed", "invoke"),
        "tta8_over_tta0": ratio("embed, tta 8", "embed"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=500)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args(argv)
    from metalite.bench.machine import machine_info, processor_text

    load0 = os.getloadavg()
    res = {str(b): measure(b, a.rounds, a.calls) for b in a.bundles}
    load1 = os.getloadavg()
    m = machine_info()
    print(
        f"Batch 1, 1 thread, tta 0, no cache, on {processor_text(m)}; load average "
        f"{'/'.join(f'{v:.2f}' for v in load0)} before, {'/'.join(f'{v:.2f}' for v in load1)} after; "
        f"{a.rounds} interleaved rounds of {a.calls} calls, CPU time of the calling thread, medians.\n"
    )
    names = list(next(iter(res.values()))["median_ms"])
    print(
        "| bundle | "
        + " | ".join(f"{n} ms" for n in names)
        + " | embed / invoke (IQR) | tta 8 / tta 0 |"
    )
    print("|---|" + "---|" * (len(names) + 2))
    for b, r in res.items():
        q, t = r["embed_over_invoke"], r["tta8_over_tta0"]
        print(
            f"| `{b}` | "
            + " | ".join(f"{r['median_ms'][n]:.4f}" for n in names)
            + f" | {q['median']:.2f}× ({q['q1']:.2f}–{q['q3']:.2f}) | {t['median']:.2f}× |"
        )
    if a.json:
        from metalite.common.files import atomic_write_text

        atomic_write_text(
            a.json,
            json.dumps(
                {
                    "machine": m,
                    "loadavg": [load0, load1],
                    "rounds": a.rounds,
                    "calls": a.calls,
                    "results": res,
                },
                indent=1,
            ),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
