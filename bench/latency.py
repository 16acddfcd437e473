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
from .fields import f, get, ratio
from .machine import LoadWatch, load_line, version
from .plots import save
from .variants import label

HERE = Path(__file__).resolve().parent
REFERENCES = ("float_tflite", "int8_tflite")  # speed-ups are reported against these when present
BACKEND = "ai_edge_litert"  # the interpreter of the headline and of the Pareto goal, 1 thread


def interpreters(build_tflite_venv: bool, say) -> dict:
    """{"ai_edge_litert": {...}, "tflite_runtime": {...}}: the python that runs each, or why none does."""
    from .runtime_env import tflite_runtime_python

    out = {}
    try:
        import ai_edge_litert  # noqa: F401

        out["ai_edge_litert"] = {
            "status": "subprocess",
            "python": sys.executable,
            "version": version("ai-edge-litert"),
        }
    except ImportError:
        out["ai_edge_litert"] = {"status": "not installed"}
    py, note = tflite_runtime_python(build_tflite_venv, say)
    out["tflite_runtime"] = (
        {"status": "subprocess", "python": py, "where": note} if py else {"status": note}
    )
    return out


def serve_worker(python, backend, site, stderr_file):
    """A ``timing.py --serve`` process for ``backend`` importing this metalite.runtime from ``site``."""
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2")
    with open(stderr_file, "w") as err:
        return subprocess.Popen(
            [python, str(HERE / "timing.py"), "--serve", "--backend", backend],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=str(site),
        )


def run_interleaved(pythons: dict, models: dict, cells, cfg, tmp, say) -> tuple:
    """(``timing.interleaved`` result, {backend: last line of its worker's stderr}) with one worker
    per interpreter in ``pythons`` ({backend: python})."""
    from .runtime_env import runtime_site

    with tempfile.TemporaryDirectory(dir=tmp) as td:
        td = (
            Path(td).resolve()
        )  # the workers run in ``site`` with it on PYTHONPATH: a relative path breaks both
        site = runtime_site(td)
        workers = {
            be: serve_worker(p, be, site, Path(td) / f"{be}.err") for be, p in pythons.items()
        }
        try:
            models = {
                v: str(Path(m).resolve()) for v, m in models.items()
            }  # workers run in another directory
            got = lat.interleaved(
                workers, models, cells, cfg["rounds"], cfg["calls"], int(cfg["warmup"]), say
            )
        finally:
            for w in workers.values():
                try:
                    w.stdin.close()
                except BrokenPipeError:  # the worker died; its stderr says why (reported below)
                    pass
                w.wait(timeout=60)
        errs = {
            be: ((Path(td) / f"{be}.err").read_text().strip().splitlines() or [""])[-1][:300]
            for be in workers
        }
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
    out = {
        **lat.summarize_rounds(rounds),
        "batch": raw["batch"],
        "threads": raw["threads"],
        "round_medians_ms": [round(v, 5) for v in rounds],
        "calls": {k: raw[k] for k in ("median_ms", "iqr_ms", "runs")},
    }
    out["gmacs_per_s"] = gmacs_per_s(macs.get(key), out["median_ms"])
    out["speedup_vs"] = {
        ref: ratio_stats(cells_of[ref][cell]["round_medians_ms"], rounds)
        for ref in REFERENCES
        if ref != key and cell in cells_of.get(ref, {})
    }
    return out


def _tflite_results(sec, got, errs, macs) -> None:
    """Fill sec["tflite"][variant][backend] from an ``interleaved`` result (errors kept, one line each)."""
    res = got["results"]
    backends = {be for per in res.values() for be in per}
    cells_by_backend = {
        be: {
            k: {c: r for c, r in res[k][be].items() if isinstance(r, dict)}
            for k in res
            if "error" not in res[k].get(be, {"error": ""})
        }
        for be in backends
    }
    for key, per in res.items():
        sec["tflite"][key] = {}
        for be, cells in per.items():
            if "error" in cells:
                sec["tflite"][key][be] = {
                    "error": cells["error"] + (f" (worker: {errs[be]})" if errs.get(be) else "")
                }
                continue
            if cells.get("how"):
                sec["interpreters"][be].setdefault("how", {})[key] = cells["how"]
            of_backend = cells_by_backend[be]
            sec["tflite"][key][be] = {
                c: cell_summary(of_backend, key, c, macs) for c in of_backend[key]
            }


def keras_latency(model, cfg, input_shape) -> dict:
    """Three ways of calling a Keras model (predict, eager call, tf.function), interleaved per batch."""
    from metalite.export.tfcompat import tf

    rng = np.random.default_rng(0)
    fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    calls = {
        "predict": "model.predict",
        "direct": "model(x, training=False) (eager)",
        "tffunction": "tf.function(model)(x)",
    }
    res = {}
    for b in (1, 32):
        x = rng.random((b, *input_shape), dtype=np.float32)
        xt = tf.constant(x)
        fns = {
            f"predict_b{b}": lambda x=x, b=b: model.predict(x, batch_size=b, verbose=0),
            f"direct_b{b}": lambda xt=xt: model(xt, training=False).numpy(),
            f"tffunction_b{b}": lambda xt=xt: fn(xt).numpy(),
        }
        rounds = lat.interleave_calls(
            fns, cfg["keras_rounds"], cfg["keras_calls"], min(cfg["warmup"], 3), per=b
        )
        for k, vals in rounds.items():
            res[k] = {**lat.summarize_rounds(vals), "batch": b, "call": calls[k.rsplit("_", 1)[0]]}
    return res


def latency_section(
    variants, cfg, macs: dict, threads=(1, 2), batches=(1, 32), say=print, tmp=None
) -> dict:
    sec = {
        "unit": "ms per image: median over interleaved rounds of each round's median call; spread = "
        "quartiles over rounds; speed-ups = median over rounds of the ratio within a round",
        "rounds": cfg["rounds"],
        "calls_per_round": cfg["calls"],
        "warmup": cfg["warmup"],
        "order": "interleaved: each round times every variant and cell on each interpreter in turn (variants "
        "in an order rotated from round to round, interpreters alternating)",
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "interpreters": interpreters(cfg["build_tflite_venv"], say),
        "tflite": {},
        "ratios": {},
        "keras": None,
    }
    pythons = {be: info["python"] for be, info in sec["interpreters"].items() if info.get("python")}
    models = {k: v.path for k, v in variants.items() if v.path is not None}
    with LoadWatch() as watch:
        if pythons and models:
            say(
                f"latency: {len(models)} variants x {', '.join(pythons)}, {cfg['rounds']} interleaved rounds"
            )
            got, errs = run_interleaved(
                pythons, models, [(b, t) for t in threads for b in batches], cfg, tmp, say
            )
            _tflite_results(sec, got, errs, macs)
            sec["ratios"] = got["ratios"]
            for be, info in got["workers"].items():
                sec["interpreters"][be].update(info)
        if "float_keras" in variants:
            say("latency: float Keras (desktop reference, its own rounds)")
            from metalite.export.tfcompat import tf

            k = variants["float_keras"].keras
            sec["keras"] = {
                "threads": "TensorFlow default (intra-op = all cores)",
                "tensorflow": tf.__version__,
                "rounds": cfg["keras_rounds"],
                "calls_per_round": cfg["keras_calls"],
                "results": keras_latency(k, cfg, tuple(k.inputs[0].shape[1:])),
            }
        else:
            sec["keras"] = {"skipped": "no float Keras model (--model FLOAT_MODEL_DIR)"}
    sec["load"] = watch.result
    return sec


# ----------------------------------------------------------------------------- headline, report.md, plot, README rows
def latency_headline(h, report, ship) -> None:
    """The headline's latency figures of the shipped variant ``ship``: ms/image, GMAC/s, speed-ups, Keras ratios."""
    lat = report.get("latency") or {}
    for b in (1, 32):
        cell = get(lat, "tflite", ship, BACKEND, f"b{b}_t1") or {}
        q = cell.get("median_ms")
        h[f"int8_ms_b{b}"], h[f"int8_gmacs_b{b}"] = q, cell.get("gmacs_per_s")
        for ref in ("float_tflite", "int8_tflite"):
            s = get(cell, "speedup_vs", ref) or {}
            h[f"speedup_vs_{ref}_b{b}"] = s.get("median")
            h[f"speedup_vs_{ref}_b{b}_iqr"] = [s["q1"], s["q3"]] if s else None
            h[f"{ref}_ms_b{b}"] = get(lat, "tflite", ref, BACKEND, f"b{b}_t1", "median_ms")
        for call in ("direct", "predict", "tffunction"):
            k = get(lat, "keras", "results", f"{call}_b{b}", "median_ms")
            h[f"keras_{call}_ms_b{b}"] = k
            h[f"keras_{call}_over_int8_latency_b{b}"] = ratio(k, q)


def _speedups(r) -> str:
    """A cell's speed-ups within rounds against each reference, with quartiles."""
    return ", ".join(
        f"{s['median']:.2f}× vs {ref} [{s['q1']:.2f}–{s['q3']:.2f}]"
        for ref, s in (r.get("speedup_vs") or {}).items()
    )


def latency_headline_lines(h, ship) -> list:
    """The headline's latency lines: speed-ups within rounds, compute rate, float Keras."""
    L = []
    for ref, what in (
        ("float_tflite", "float TFLite (the float model before compression)"),
        ("int8_tflite", "int8 TFLite of the unpruned model"),
    ):
        if h.get(f"speedup_vs_{ref}_b1") is not None:
            L.append(
                f"- Latency, {ship} vs {what} ({BACKEND}, 1 thread, interleaved rounds): "
                f"{h[f'speedup_vs_{ref}_b1']:.2f}× faster at batch 1 ({f(h['int8_ms_b1'], '{:.4f}')} vs "
                f"{f(h[f'{ref}_ms_b1'], '{:.4f}')} ms/image)"
                + (
                    f", {h[f'speedup_vs_{ref}_b32']:.2f}× at batch 32"
                    if h.get(f"speedup_vs_{ref}_b32")
                    else ""
                )
                + " (median of the ratios within each round)."
            )
    if h.get("int8_ms_b1") is not None and h.get("int8_gmacs_b1") is not None:
        L.append(
            f"- Cost: {ship} does {h['int8_macs'] / 1e6:.2f} M multiply-accumulates per image; "
            f"{h['int8_ms_b1']:.4f} ms/image at batch 1 is {h['int8_gmacs_b1']:.1f} GMAC/s on one core."
        )
    if h.get("keras_tffunction_over_int8_latency_b1") is not None:
        L.append(
            f"- vs float Keras (TensorFlow, all cores, its own rounds; ratio of medians): "
            f"`tf.function(model)` {h['keras_tffunction_over_int8_latency_b1']:.1f}× slower at batch 1, "
            f"{f(h.get('keras_tffunction_over_int8_latency_b32'), '{:.1f}')}× at batch 32; eager `model(x)` "
            f"{f(h.get('keras_direct_over_int8_latency_b1'), '{:.1f}')}×; `model.predict` "
            f"{f(h.get('keras_predict_over_int8_latency_b1'), '{:.0f}')}× at batch 1."
        )
    return L


def interpreter_ratio_lines(report) -> list:
    """The same variant on the two interpreters, round by round (tflite-runtime time / ai-edge-litert time)."""
    lat = report.get("latency", {})
    if not lat.get("ratios"):
        return []
    L = [
        "",
        f"{lat.get('order', '')}.",
        "",
        "| variant | batch, threads | interpreter ratio (median of rounds) | q1–q3 |",
        "|---|---|---|---|",
    ]
    for v, cells in lat["ratios"].items():
        for cell, r in cells.items():
            name = next(k for k in r if "/" in k)
            L.append(
                f"| {label(report, v)} | {cell} | {name} = {r[name]:.2f} | {r['q1']:.2f}–{r['q3']:.2f} |"
            )
    return L


def latency_lines(report, plot_files) -> list:
    lat = report.get("latency", {})
    L = [
        "## latency",
        "",
        f"{lat.get('unit')}. {lat.get('rounds')} rounds of {lat.get('calls_per_round')} calls "
        f"after {lat.get('warmup')} warm-up calls. OPENBLAS_CORETYPE={lat.get('OPENBLAS_CORETYPE') or 'unset'}.",
        "",
        load_line(lat.get("load")),
        "",
    ]
    if get(lat, "load", "warning"):
        L += [f"> **Warning**: {lat['load']['warning']}.", ""]
    for be, info in (lat.get("interpreters") or {}).items():
        L.append(
            f"- {be}: {info.get('status')}"
            + (f" {info.get('version')}" if info.get("version") else "")
            + (
                f" (numpy {info['numpy']}, {info.get('where') or info.get('python')})"
                if info.get("numpy")
                else ""
            )
        )
        L += [f"  - {label(report, v)}: {how}" for v, how in (info.get("how") or {}).items()]
    L += interpreter_ratio_lines(report)
    L += [
        "",
        "| variant | interpreter | batch | threads | median ms/image | quartiles over rounds | GMAC/s | "
        "speed-up within rounds [quartiles] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, per in (lat.get("tflite") or {}).items():
        for be, res in per.items():
            if "error" in res:
                L.append(f"| {label(report, v)} | {be} | | | error: {res['error']} | | | |")
                continue
            for r in res.values():
                if "median_ms" in r:
                    L.append(
                        f"| {label(report, v)} | {be} | {r['batch']} | {r['threads']} | {r['median_ms']:.4f} | "
                        f"{r['q1_ms']:.4f}–{r['q3_ms']:.4f} | {f(r.get('gmacs_per_s'), '{:.1f}')} | {_speedups(r)} |"
                    )
    for r in (get(lat, "keras", "results") or {}).values():
        L.append(
            f"| float Keras | TF {get(lat, 'keras', 'tensorflow')} `{r['call']}` | {r['batch']} | all cores | "
            f"{r['median_ms']:.4f} | {r['q1_ms']:.4f}–{r['q3_ms']:.4f} | | |"
        )
    if get(lat, "keras", "skipped"):
        L.append(f"\nfloat Keras reference skipped: {lat['keras']['skipped']}")
    return L + ([f"\n![latency]({plot_files['latency']})"] if "latency" in plot_files else [])


def latency_plot(plt, report, path) -> bool:
    lat = report.get("latency") or {}
    rows = []
    for v, per in (lat.get("tflite") or {}).items():
        for be, res in per.items():
            for b in (1, 32):
                r = res.get(f"b{b}_t1") if isinstance(res, dict) else None
                if r and "median_ms" in r:
                    rows.append((f"{label(report, v)} · {be} · batch {b}", r))
    for b in (1, 32):
        r = get(lat, "keras", "results", f"tffunction_b{b}")
        if r:
            rows.append((f"float Keras tf.function · batch {b} (all cores)", r))
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(rows) + 1.6))
    meds = [r["median_ms"] for _, r in rows]
    err = [
        [m - r["q1_ms"] for m, (_, r) in zip(meds, rows)],
        [r["q3_ms"] - m for m, (_, r) in zip(meds, rows)],
    ]
    ax.barh(range(len(rows)), meds, xerr=err, capsize=2, color="tab:blue")
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(
        f"ms per image, log scale\n(median of {lat.get('rounds')} interleaved rounds; "
        "whiskers: quartiles over rounds)",
        fontsize=8,
    )
    ax.set_title(
        "Backbone latency, 1 interpreter thread"
        + ("  [machine was busy]" if get(lat, "load", "busy") else ""),
        fontsize=9,
    )
    save(plt, fig, path)
    return True


def latency_readme_rows(h) -> list:
    ship = h.get("shipped_label")
    rows = []
    for b in (1, 32):
        if h.get(f"speedup_vs_float_tflite_b{b}") is not None:
            rows.append(
                (
                    f"Latency, batch {b} (ms/image, 1 thread)",
                    f"{h[f'int8_ms_b{b}']:.4f} ({ship})",
                    f"{h[f'float_tflite_ms_b{b}']:.4f} (float TFLite)",
                    f"{h[f'speedup_vs_float_tflite_b{b}']:.2f}× faster",
                )
            )
        elif h.get(f"int8_ms_b{b}") is not None:
            rows.append(
                (
                    f"Latency, batch {b} (ms/image, 1 thread)",
                    f"{h[f'int8_ms_b{b}']:.4f} ({ship})",
                    "",
                    "",
                )
            )
    if h.get("speedup_vs_int8_tflite_b1") is not None:
        rows.append(
            (
                "Latency, batch 1, vs the unpruned int8 model",
                f"{h['int8_ms_b1']:.4f}",
                f"{h['int8_tflite_ms_b1']:.4f}",
                f"{h['speedup_vs_int8_tflite_b1']:.2f}× faster",
            )
        )
    if h.get("keras_tffunction_over_int8_latency_b1") is not None:
        rows.append(
            (
                "Latency, batch 1, vs TensorFlow (float Keras `tf.function`, all cores)",
                f"{h['int8_ms_b1']:.4f}",
                f"{h['keras_tffunction_ms_b1']:.4f}",
                f"{h['keras_tffunction_over_int8_latency_b1']:.1f}× faster",
            )
        )
    if h.get("int8_gmacs_b1") is not None:
        rows.append(
            (
                "Compute, batch 1",
                f"{h['int8_macs'] / 1e6:.2f} MMAC/image, {h['int8_gmacs_b1']:.1f} GMAC/s",
                f"{f(h.get('float_tflite_macs') and h['float_tflite_macs'] / 1e6)} MMAC/image (float)",
                "",
            )
        )
    return rows
