"""Latency of a .tflite model under one interpreter package: ms per image, median and IQR of repeated runs.

Self-contained on purpose (stdlib + numpy + the interpreter package, and ``metalite.runtime`` when it is
on the path): ``metalite bench`` runs this file as a worker process per interpreter, also inside another
environment (the tflite-runtime venv, numpy<2)::

    python timing.py --serve --backend tflite_runtime   # JSON requests on stdin, one reply per line

``interleaved`` drives one ``--serve`` worker per interpreter in alternating rounds, so both interpreters
and every model see the same machine load (the models' order rotates from round to round, the
interpreters' order alternates); a worker opens models the way the runtime does (``metalite.runtime``'s
``open_model``: XNNPACK with int8) when it can import it. ``interleave_calls`` does the same for
callables in this process (the float Keras model).
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
    return {
        "median_ms": float(med),
        "q1_ms": float(q1),
        "q3_ms": float(q3),
        "iqr_ms": float(q3 - q1),
        "min_ms": float(t.min()),
        "runs": int(len(t)),
    }


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


def summarize_rounds(round_ms) -> dict:
    """Median, quartiles, IQR, min and max over per-round medians (ms per image)."""
    v = np.asarray(round_ms, np.float64)
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "median_ms": float(med),
        "q1_ms": float(q1),
        "q3_ms": float(q3),
        "iqr_ms": float(q3 - q1),
        "min_ms": float(v.min()),
        "max_ms": float(v.max()),
        "rounds": int(len(v)),
    }


def interleave_calls(fns: dict, rounds: int, calls: int, warmup: int, per: int = 1) -> dict:
    """{name: [median ms per image of each round]} of in-process callables, round by round, order rotated."""
    names = list(fns)
    for n in names:
        time_calls(fns[n], warmup, 0)
    out = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            out[n].append(float(np.median(time_calls(fns[n], 0, calls))) * 1000.0 / max(1, per))
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

        return version(
            {
                "ai_edge_litert": "ai-edge-litert",
                "tflite_runtime": "tflite-runtime",
                "tensorflow": "tensorflow",
            }[backend]
        )
    except Exception:
        return None


def _open(model_path: str, backend: str, threads: int):
    """(interpreter, how it runs): through metalite.runtime when importable (as the device runs it), else raw."""
    try:
        from metalite.runtime.interpreter import describe, get_backend, open_model
    except ImportError:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return import_interpreter(backend)(
                model_path=str(model_path), num_threads=int(threads)
            ), f"{backend} Interpreter defaults (metalite.runtime not importable)"
    interp, acc = open_model(model_path, int(threads), None, get_backend(backend))
    return interp, describe(acc)


def _serve(backend: str) -> int:
    """Answer ``{"model", "batch", "threads", "warmup", "calls"}`` lines with ``{"times_s", "how"}`` lines."""
    rng = np.random.default_rng(0)
    cache = {}
    for line in sys.stdin:
        req = json.loads(line)
        key = (req["model"], int(req["threads"]))
        try:
            if key not in cache:
                cache[key] = _open(req["model"], backend, int(req["threads"]))
        except Exception as e:  # noqa: BLE001 - the parent reports it for this model; other models still run
            sys.stdout.write(json.dumps({"error": f"{type(e).__name__}: {str(e)[:300]}"}) + "\n")
            sys.stdout.flush()
            continue
        it, how = cache[key]
        din, dout = it.get_input_details()[0], it.get_output_details()[0]
        b = int(req["batch"])
        if int(din["shape"][0]) != b:
            it.resize_tensor_input(din["index"], [b, *[int(s) for s in din["shape"][1:]]])
            it.allocate_tensors()
            din = it.get_input_details()[0]
        dtype = np.dtype(din["dtype"])
        shape = [int(s) for s in din["shape"]]
        x = (
            rng.random(shape, dtype=np.float32)
            if dtype.kind == "f"
            else rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=shape).astype(dtype)
        )

        def call(
            it=it, din=din, dout=dout, x=x
        ):  # this iteration's interpreter and input, bound when made
            it.set_tensor(din["index"], x)
            it.invoke()
            it.get_tensor(dout["index"])

        times = time_calls(call, int(req["warmup"]), int(req["calls"]))
        sys.stdout.write(
            json.dumps(
                {
                    "times_s": times,
                    "how": how,
                    "version": backend_version(backend),
                    "numpy": np.__version__,
                }
            )
            + "\n"
        )
        sys.stdout.flush()
    return 0


def interleaved(
    workers: dict, models: dict, cells, rounds: int, calls: int, warmup: int, say=None
) -> dict:
    """Time every model on every worker in ``rounds`` alternating rounds.

    Args:
      workers: {backend: Popen of ``--serve`` with text pipes}; models: {variant: path};
      cells: [(batch, threads)]; rounds/calls/warmup: per round, ``calls`` timed after ``warmup``.
    Returns:
      {"results": {variant: {backend: {"b{B}_t{T}": stats + round medians, "how"}}},
       "ratios": {variant: {"b{B}_t{T}": {"<b>/<a>": median, q1, q3 of per-round ratios}}}} with a, b
      the first two backends, "workers": {backend: {"version", "numpy"}}}; a failing worker is reported as
      {"error": ...} for its cells.
    """
    names = list(workers)
    res = {v: {b: {} for b in names} for v in models}
    seen = {}
    per_round = {}
    order = list(models)
    for r in range(rounds):
        k = r % len(order)
        for v in order[k:] + order[:k]:
            path = models[v]
            for batch, threads in cells:
                cell = f"b{batch}_t{threads}"
                for b in names if r % 2 == 0 else names[::-1]:
                    if "error" in res[v][b]:
                        continue
                    try:
                        w = workers[b]
                        w.stdin.write(
                            json.dumps(
                                {
                                    "model": str(path),
                                    "batch": batch,
                                    "threads": threads,
                                    "warmup": warmup,
                                    "calls": calls,
                                }
                            )
                            + "\n"
                        )
                        w.stdin.flush()
                        out = json.loads(w.stdout.readline())
                        if "error" in out:
                            raise RuntimeError(out["error"])
                    except Exception as e:  # noqa: BLE001 - a dead worker or a model it cannot run: report it, go on
                        res[v][b] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                        continue
                    res[v][b].setdefault("how", out["how"])
                    seen[b] = {"version": out.get("version"), "numpy": out.get("numpy")}
                    per_round.setdefault((v, b, cell), []).append(out["times_s"])
        if say:
            say(f"latency: round {r + 1}/{rounds} done")
    ratios = {}
    for (v, b, cell), rs in per_round.items():
        batch, threads = (int(t[1:]) for t in cell.split("_"))
        res[v][b][cell] = {
            **stats([t for x in rs for t in x], per=batch),
            "batch": batch,
            "threads": threads,
            "round_medians_ms": [float(np.median(x)) * 1000 / batch for x in rs],
        }
    for v in models:
        if len(names) < 2 or any("error" in res[v][b] for b in names[:2]):
            continue
        a, b = names[:2]
        ratios[v] = {}
        for cell, ra in res[v][a].items():
            rb = res[v][b].get(cell)
            if isinstance(ra, dict) and rb and "round_medians_ms" in ra:
                q = np.asarray(rb["round_medians_ms"]) / np.asarray(ra["round_medians_ms"])
                ratios[v][cell] = {
                    f"{b}/{a}": float(np.median(q)),
                    "q1": float(np.percentile(q, 25)),
                    "q3": float(np.percentile(q, 75)),
                    "rounds": int(len(q)),
                }
    return {"results": res, "ratios": ratios, "workers": seen}


def main(argv) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="latency worker of metalite bench")
    ap.add_argument(
        "--serve", action="store_true", required=True, help="answer timing requests on stdin"
    )
    ap.add_argument("--backend", required=True, help="ai_edge_litert, tflite_runtime or tensorflow")
    a = ap.parse_args(argv)
    return _serve(a.backend)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
