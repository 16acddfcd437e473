"""Latency of a .tflite model under one interpreter package: ms per image, median and IQR of repeated runs.

Self-contained on purpose (stdlib + numpy + the interpreter package only): ``metalite bench`` runs this
file as a script inside another environment (the tflite-runtime venv, numpy<2) as well as in-process::

    python bench_latency.py --worker MODEL.tflite --backend tflite_runtime --batches 1,32 --threads 1,2 \
        --warmup 5 --runs 30

prints one JSON object on stdout.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def stats(times_s, per: int = 1) -> dict:
    """Median, quartiles and IQR in ms per image of repeated timings (seconds per call of ``per`` images)."""
    t = np.asarray(times_s, np.float64) * 1000.0 / max(1, per)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"median_ms": float(med), "q1_ms": float(q1), "q3_ms": float(q3), "iqr_ms": float(q3 - q1),
            "min_ms": float(t.min()), "runs": int(len(t))}


def time_calls(fn, warmup: int, runs: int) -> list:
    """Wall time in seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def import_interpreter(backend: str):
    if backend == "ai_edge_litert":
        from ai_edge_litert.interpreter import Interpreter
    elif backend == "tflite_runtime":
        from tflite_runtime.interpreter import Interpreter
    elif backend == "tensorflow":
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    else:
        raise ValueError(f"unknown interpreter {backend!r}")
    return Interpreter


def backend_version(backend: str) -> str | None:
    try:
        from importlib.metadata import version

        return version({"ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
                        "tensorflow": "tensorflow"}[backend])
    except Exception:
        return None


def measure_tflite(model_path: str, backend: str, batches=(1, 32), threads=(1, 2), warmup: int = 5,
                   runs: int = 30, seed: int = 0) -> dict:
    """{"b{B}_t{T}": stats} of set_tensor + invoke + get_tensor on random input, per image."""
    import warnings

    Interpreter = import_interpreter(backend)
    rng = np.random.default_rng(seed)
    res = {}
    for t in threads:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            it = Interpreter(model_path=str(model_path), num_threads=int(t))
        din = it.get_input_details()[0]
        dout = it.get_output_details()[0]
        dyn = int(din.get("shape_signature", din["shape"])[0]) == -1
        for b in batches:
            if not dyn and b != int(din["shape"][0]):
                res[f"b{b}_t{t}"] = {"skipped": f"static batch {int(din['shape'][0])}"}
                continue
            it.resize_tensor_input(din["index"], [int(b), *[int(s) for s in din["shape"][1:]]])
            it.allocate_tensors()
            dtype = np.dtype(din["dtype"])
            shape = [int(b), *[int(s) for s in din["shape"][1:]]]
            if dtype.kind == "f":
                x = rng.random(shape, dtype=np.float32)
            else:
                x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=shape).astype(dtype)

            def call():
                it.set_tensor(din["index"], x)
                it.invoke()
                it.get_tensor(dout["index"])

            res[f"b{b}_t{t}"] = {**stats(time_calls(call, warmup, runs), per=b), "batch": int(b), "threads": int(t)}
    return res


def _worker(argv) -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", required=True, help="model path")
    ap.add_argument("--backend", required=True)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args(argv)
    out = {"backend": a.backend, "version": backend_version(a.backend), "numpy": np.__version__,
           "python": sys.version.split()[0], "executable": sys.executable,
           "results": measure_tflite(a.worker, a.backend, [int(v) for v in a.batches.split(",")],
                                     [int(v) for v in a.threads.split(",")], a.warmup, a.runs)}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(_worker(sys.argv[1:]))
