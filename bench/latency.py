"""The ``latency`` section of ``metalite bench``: ms per image of every variant, interleaved, per interpreter.

One ``timing.py --serve`` worker process per interpreter package (each opening models as
``metalite.runtime`` does) times every TFLite variant in every cell (batch 1/32, 1/2 threads) in the same
rounds (``timing.interleaved``). A variant's figure is the median of its per-round medians, its
spread the quartiles of those; a speed-up is the median of the ratios *within* each round, which a
neighbour's burst of CPU use cancels out of. The float Keras model is timed in its own rounds
(TensorFlow's thread pool would disturb the interpreters'), so ratios to it are ratios of medians.
``LoadWatch`` records how busy the machine was meanwhile.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from . import timing as lat
from .cost import gmacs_per_s
from .machine import LoadWatch, version

HERE = Path(__file__).resolve().parent
REFERENCES = ("float_tflite", "int8_tflite")  # speed-ups are reported against these when present


def interpreters(build_tflite_venv: bool, say) -> dict:
    """{"ai_edge_litert": {...}, "tflite_runtime": {...}}: the python that runs each, or why none does."""
    from .runtime_env import tflite_runtime_python

    out = {}
    try:
        import ai_edge_litert  # noqa: F401

        out["ai_edge_litert"] = {"status": "subprocess", "python": sys.executable, "version": version("ai-edge-litert")}
    except ImportError:
        out["ai_edge_litert"] = {"status": "not installed"}
    py, note = tflite_runtime_python(build_tflite_venv, say)
    out["tflite_runtime"] = {"status": "subprocess", "python": py, "where": note} if py else {"status": note}
    return out


def serve_worker(python, backend, site, stderr_file):
    """A ``timing.py --serve`` process for ``backend`` importing this metalite.runtime from ``site``."""
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2")
    with open(stderr_file, "w") as err:
        return subprocess.Popen([python, str(HERE / "timing.py"), "--serve", "--backend", backend],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                env=env, cwd=str(site))


def run_interleaved(pythons: dict, models: dict, cells, cfg, tmp, say) -> tuple:
    """(``timing.interleaved`` result, {backend: last line of its worker's stderr}) with one worker
    per interpreter in ``pythons`` ({backend: python})."""
    from .runtime_env import runtime_site

    with tempfile.TemporaryDirectory(dir=tmp) as td:
        td = Path(td).resolve()  # the workers run in ``site`` with it on PYTHONPATH: a relative path breaks both
        site = runtime_site(td)
        workers = {be: serve_worker(p, be, site, Path(td) / f"{be}.err") for be, p in pythons.items()}
        try:
            models = {v: str(Path(m).resolve()) for v, m in models.items()}  # workers run in another directory
            got = lat.interleaved(workers, models, cells, cfg["rounds"], cfg["calls"], int(cfg["warmup"]), say)
        finally:
            for w in workers.values():
                try:
                    w.stdin.close()
                except BrokenPipeError:  # the worker died; its stderr says why (reported below)
                    pass
                w.wait(timeout=60)
        errs = {be: ((Path(td) / f"{be}.err").read_text().strip().splitlines() or [""])[-1][:300] for be in workers}
    return got, errs


def ratio_stats(ref_rounds, rounds) -> dict:
    """How many times faster than the reference, round by round: median and quartiles of ref/this."""
    r = np.asarray(ref_rounds, np.float64) / np.asarray(rounds, np.float64)
    q1, med, q3 = np.percentile(r, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "rounds": int(len(r))}


def cell_summary(cells_of: dict, key: str, cell: str, macs) -> dict:
    """One variant's cell: statistics over rounds, GMAC/s, speed-ups within rounds vs the references.

    ``cells_of``: {variant: {cell: interleaved() result}} of one interpreter."""
    raw = cells_of[key][cell]
    rounds = raw["round_medians_ms"]
    out = {**lat.summarize_rounds(rounds), "batch": raw["batch"], "threads": raw["threads"],
           "round_medians_ms": [round(v, 5) for v in rounds],
           "calls": {k: raw[k] for k in ("median_ms", "iqr_ms", "runs")}}
    out["gmacs_per_s"] = gmacs_per_s(macs.get(key), out["median_ms"])
    out["speedup_vs"] = {ref: ratio_stats(cells_of[ref][cell]["round_medians_ms"], rounds) for ref in REFERENCES
                         if ref != key and cell in cells_of.get(ref, {})}
    return out


def _tflite_results(sec, got, errs, macs) -> None:
    """Fill sec["tflite"][variant][backend] from an ``interleaved`` result (errors kept, one line each)."""
    res = got["results"]
    backends = {be for per in res.values() for be in per}
    cells_by_backend = {be: {k: {c: r for c, r in res[k][be].items() if isinstance(r, dict)}
                             for k in res if "error" not in res[k].get(be, {"error": ""})} for be in backends}
    for key, per in res.items():
        sec["tflite"][key] = {}
        for be, cells in per.items():
            if "error" in cells:
                sec["tflite"][key][be] = {"error": cells["error"] + (f" (worker: {errs[be]})" if errs.get(be) else "")}
                continue
            if cells.get("how"):
                sec["interpreters"][be].setdefault("how", {})[key] = cells["how"]
            of_backend = cells_by_backend[be]
            sec["tflite"][key][be] = {c: cell_summary(of_backend, key, c, macs) for c in of_backend[key]}


def keras_latency(model, cfg, input_shape) -> dict:
    """Three ways of calling a Keras model (predict, eager call, tf.function), interleaved per batch."""
    from metalite.export.tfcompat import tf

    rng = np.random.default_rng(0)
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    calls = {"predict": "model.predict", "direct": "model(x, training=False) (eager)",
             "tffunction": "tf.function(model)(x)"}
    res = {}
    for b in (1, 32):
        x = rng.random((b, *input_shape), dtype=np.float32)
        xt = tf.constant(x)
        fns = {f"predict_b{b}": lambda: model.predict(x, batch_size=b, verbose=0),
               f"direct_b{b}": lambda: model(xt, training=False).numpy(),
               f"tffunction_b{b}": lambda: fn(xt).numpy()}
        rounds = lat.interleave_calls(fns, cfg["keras_rounds"], cfg["keras_calls"], min(cfg["warmup"], 3), per=b)
        for k, vals in rounds.items():
            res[k] = {**lat.summarize_rounds(vals), "batch": b, "call": calls[k.rsplit("_", 1)[0]]}
    return res


def latency_section(variants, cfg, macs: dict, threads=(1, 2), batches=(1, 32), say=print, tmp=None) -> dict:
    sec = {"unit": "ms per image: median over interleaved rounds of each round's median call; spread = "
                   "quartiles over rounds; speed-ups = median over rounds of the ratio within a round",
           "rounds": cfg["rounds"], "calls_per_round": cfg["calls"], "warmup": cfg["warmup"],
           "order": "interleaved: each round times every variant and cell on each interpreter in turn (variants "
                    "in an order rotated from round to round, interpreters alternating)",
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
           "interpreters": interpreters(cfg["build_tflite_venv"], say), "tflite": {}, "ratios": {}, "keras": None}
    pythons = {be: info["python"] for be, info in sec["interpreters"].items() if info.get("python")}
    models = {k: v.path for k, v in variants.items() if v.path is not None}
    with LoadWatch() as watch:
        if pythons and models:
            say(f"latency: {len(models)} variants x {', '.join(pythons)}, {cfg['rounds']} interleaved rounds")
            got, errs = run_interleaved(pythons, models, [(b, t) for t in threads for b in batches], cfg, tmp, say)
            _tflite_results(sec, got, errs, macs)
            sec["ratios"] = got["ratios"]
            for be, info in got["workers"].items():
                sec["interpreters"][be].update(info)
        if "float_keras" in variants:
            say("latency: float Keras (desktop reference, its own rounds)")
            from metalite.export.tfcompat import tf

            k = variants["float_keras"].keras
            sec["keras"] = {"threads": "TensorFlow default (intra-op = all cores)", "tensorflow": tf.__version__,
                            "rounds": cfg["keras_rounds"], "calls_per_round": cfg["keras_calls"],
                            "results": keras_latency(k, cfg, tuple(k.inputs[0].shape[1:]))}
        else:
            sec["keras"] = {"skipped": "no float Keras model (--model FLOAT_MODEL_DIR)"}
    sec["load"] = watch.result
    return sec
