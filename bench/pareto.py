"""The ``pareto`` section of ``metalite bench``: held-out error against time and bytes, one point per bundle.

The bundles are compressions of one float model (e.g. 0/25/50/75% of filters removed). For each:
Lake-style one-shot error through the device runtime (``training.lake``: 20 characters of one held-out
alphabet, support and query by different drawers; on data without drawers or alphabets, 20-way 1-shot
episodes of held-out classes instead), the *paired* error difference to the least compressed bundle (same
runs, so the difference is much tighter than either error), and the int8 backbone's ms per image with
every bundle interleaved in the same rounds (speed-ups are ratios within a round).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from .accuracy import split_phrase
from .cost import tflite_macs
from .fields import get
from .latency import BACKEND, ratio_stats, run_interleaved
from .machine import LoadWatch, load_line
from .plots import save
from .timing import summarize_rounds
from .variants import compression_of, describe

SPEEDUP_GOAL, ERROR_BUDGET = 2.0, 0.01  # the goal: >= 2x faster per image at <= 1 pt more error


def _runs(data, n: int, seed: int = 0) -> tuple:
    """(protocol name, [(group, support_idx, query_idx)]): Lake runs if the data allows, else episodes."""
    from metalite.training.lake import lake_alphabets, lake_runs

    if lake_alphabets(data):
        return "lake", lake_runs(data, n, seed=seed)
    ways = min(20, data.num_classes)
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n):
        classes = rng.choice(data.num_classes, ways, replace=False)
        pairs = [rng.choice(data.indices_of(c), 2, replace=False) for c in classes]
        runs.append(("all", np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])))
    return f"{ways}way1shot", runs


def _error(bundle_path, data, runs) -> tuple:
    """(lake_error result, per-run errors) of a bundle through the runtime (fit on supports, predict)."""
    from metalite.runtime import FewShotClassifier
    from metalite.training.lake import lake_error, runtime_classifier

    clf = FewShotClassifier(str(bundle_path), num_threads=1, delegate="cpu", cache_size=0)
    classify, per_run = runtime_classifier(clf, data.images), []

    def recorded(s_idx, labels, q_idx):
        pred = np.asarray(classify(s_idx, labels, q_idx))
        per_run.append(float((pred != labels).mean()))
        return pred

    return lake_error(recorded, runs), per_run


def shown_path(path) -> str:
    """``path`` relative to the working directory when it lies below it (a report names no home directories)."""
    rel = os.path.relpath(path)
    return str(path) if rel.startswith("..") else rel


def _point(bundle) -> dict:
    raw = Path(bundle.backbone_path).read_bytes()
    c = compression_of(bundle.manifest)
    return {
        "bundle": shown_path(bundle.root),
        "label": describe(c),
        "structured": c["structured"],
        "sparsity": c["sparsity"],
        "widths": c["widths"],
        "bytes": len(raw),
        "gzip_bytes": len(gzip.compress(raw, 9, mtime=0)),
        "macs": tflite_macs(raw, str(bundle.backbone_path)),
    }


def _timing(points, cfg, tmp, say, pythons=None) -> dict:
    """Interleaved ms/image of every bundle's backbone.tflite, 1 thread, batch 1 and 32: on ai-edge-litert (the
    goal's interpreter) and on every other interpreter in ``pythons`` ({backend: python}, e.g. tflite-runtime:
    ``other_interpreters`` of each point, batch 1)."""
    import sys

    pythons = {
        BACKEND: sys.executable,
        **{b: py for b, py in (pythons or {}).items() if b != BACKEND},
    }
    models = {str(i): p["_path"] for i, p in enumerate(points)}
    say(
        f"pareto: {len(models)} backbones x {', '.join(pythons)} interleaved ({cfg['rounds']} rounds)"
    )
    with LoadWatch() as watch:
        got, errs = run_interleaved(pythons, models, [(1, 1), (32, 1)], cfg, tmp, say)
    per = got["results"]
    for i, p in enumerate(points):
        if "error" in per[str(i)][BACKEND]:
            raise RuntimeError(
                f"timing {p['bundle']}: {per[str(i)][BACKEND]['error']} ({errs.get(BACKEND)})"
            )
        for cell in ("b1_t1", "b32_t1"):
            vals = per[str(i)][BACKEND][cell]["round_medians_ms"]
            p[cell] = {
                **summarize_rounds(vals),
                "speedup": ratio_stats(per["0"][BACKEND][cell]["round_medians_ms"], vals),
            }
        p["other_interpreters"] = {}
        for b in pythons:
            if b != BACKEND and "b1_t1" in per[str(i)][b] and "b1_t1" in per["0"][b]:
                vals = per[str(i)][b]["b1_t1"]["round_medians_ms"]
                p["other_interpreters"][b] = {
                    "b1_t1": {
                        **summarize_rounds(vals),
                        "speedup": ratio_stats(per["0"][b]["b1_t1"]["round_medians_ms"], vals),
                    }
                }
    return watch.result


def pareto_section(bundle_paths, data, cfg, say=print, tmp=None, pythons=None) -> dict:
    """Error, paired error difference, bytes and interleaved latency of each bundle (least compressed first)."""
    from metalite.runtime.bundle import open_bundle
    from metalite.training.evaluate import mean_ci95

    bundles = sorted(
        (open_bundle(p) for p in bundle_paths),
        key=lambda b: (
            compression_of(b.manifest)["structured"],
            compression_of(b.manifest)["sparsity"],
        ),
    )
    protocol, runs = _runs(data, cfg["pareto_runs"])
    points, base = [], None
    for b in bundles:
        say(f"pareto: {protocol} error of {b.root.name} through the runtime ({len(runs)} runs)")
        res, per_run = _error(b.root, data, runs)
        p = {
            **_point(b),
            "_path": b.backbone_path,
            "error": res["error"],
            "ci95": res["ci95"],
            "alphabets": res.get("alphabets"),
        }
        base = base if base is not None else per_run
        d, dci = mean_ci95(np.asarray(per_run) - np.asarray(base))
        p["error_diff"], p["error_diff_ci95"] = d, dci
        points.append(p)
    labels = [p["label"] for p in points]
    for (
        p
    ) in points:  # two bundles of the same compression (e.g. longer fine-tuning): tell them apart
        if labels.count(p["label"]) > 1:
            p["label"] += f" ({Path(p['bundle']).name})"
    load = _timing(points, cfg, tmp, say, pythons)
    for p in points:
        p.pop("_path")
        s = p["b1_t1"]["speedup"]["median"]
        p["meets_goal"] = bool(s >= SPEEDUP_GOAL and p["error_diff"] <= ERROR_BUDGET)
    return {
        "protocol": protocol,
        "runs": len(runs),
        "data": data.spec,
        "split": "test",
        "reference": points[0]["label"],
        "goal": f">= {SPEEDUP_GOAL:.0f}x faster per image (batch 1, 1 thread, within-round ratio) at "
        f"<= {100 * ERROR_BUDGET:.0f} pt more error than the reference (paired runs)",
        "interpreter": BACKEND,
        "points": points,
        "front": _front(points),
        "load": load,
    }


def _front(points) -> dict:
    """Which points are Pareto-optimal in (error, ms at batch 1) and which meet the goal."""

    def dominated(p):
        return any(
            q is not p
            and q["error"] <= p["error"]
            and q["b1_t1"]["median_ms"] <= p["b1_t1"]["median_ms"]
            and (q["error"] < p["error"] or q["b1_t1"]["median_ms"] < p["b1_t1"]["median_ms"])
            for q in points
        )

    return {
        "optimal": [p["label"] for p in points if not dominated(p)],
        "meets_goal": [p["label"] for p in points if p["meets_goal"]],
    }


# ----------------------------------------------------------------------------- headline, report.md, plot, README table
def pareto_best(report) -> dict | None:
    """The fastest Pareto bundle that meets the goal (else the one with the largest speed-up at the least
    error cost, flagged ``meets_goal`` False): label, speed-up, paired error difference and its CI."""
    points = (get(report, "pareto", "points") or [])[1:]  # the first is the reference itself
    if not points:
        return None
    ok = [p for p in points if p.get("meets_goal")]
    p = (
        max(ok, key=lambda q: q["b1_t1"]["speedup"]["median"])
        if ok
        else min(
            points, key=lambda q: q["error_diff"] / max(q["b1_t1"]["speedup"]["median"] - 1, 1e-3)
        )
    )
    return {
        "label": p["label"],
        "speedup_b1": p["b1_t1"]["speedup"]["median"],
        "error": p["error"],
        "error_diff": p["error_diff"],
        "error_diff_ci95": p["error_diff_ci95"],
        "meets_goal": bool(p.get("meets_goal")),
        "reference": get(report, "pareto", "reference"),
        "protocol": get(report, "pareto", "protocol"),
        "runs": get(report, "pareto", "runs"),
        "kib": p["bytes"] / 1024,
    }


def pareto_headline_lines(h) -> list:
    """The headline's structured-pruning line: the best Pareto bundle against the reference."""
    L = []
    best = h.get("pareto_best")
    if best:
        L.append(
            f"- Structured pruning ({best['protocol']} error through the runtime, {best['runs']} paired runs): "
            f"{best['label']} is {best['speedup_b1']:.2f}× faster per image than {best['reference']} "
            f"(batch 1, within rounds) at {100 * best['error_diff']:+.2f} ± {100 * best['error_diff_ci95']:.2f} pt "
            f"error ({100 * best['error']:.2f}%, {best['kib']:.1f} KiB); "
            + ("meets" if best["meets_goal"] else "no bundle meets")
            + " the goal (pareto section)."
        )
    return L


def pareto_lines(report, plot_files) -> list:
    par = report.get("pareto") or {}
    if not par.get("points"):
        return ["## pareto", "", par.get("skipped") or "not measured"]
    L = [
        "## pareto",
        "",
        f"{par['protocol']} error through the device runtime on the "
        f"{split_phrase({**(report.get('accuracy') or {}), 'split': par['split']})} "
        f"({par['runs']} runs, the same runs for every bundle); Δ = paired error difference to the reference "
        f"({par['reference']}). Latency: every bundle's backbone interleaved ({par['interpreter']}, 1 thread); "
        f"speed-up = median of the within-round ratios to the reference. Goal: {par['goal']}.",
        "",
        load_line(par.get("load")),
        "",
    ]
    if get(par, "load", "warning"):
        L += [f"> **Warning**: {par['load']['warning']}.", ""]
    L += [
        "| bundle | widths | error | Δ error vs reference | ms/image b1 | speed-up b1 [quartiles] | ms/image b32 | "
        "KiB | MMACs | meets goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in par["points"]:
        s = p["b1_t1"]["speedup"]
        L.append(
            f"| {p['label']} | {p.get('widths') or ''} | {100 * p['error']:.2f}% ± {100 * p['ci95']:.2f} | "
            f"{100 * p['error_diff']:+.2f} ± {100 * p['error_diff_ci95']:.2f} pt | {p['b1_t1']['median_ms']:.4f} | "
            f"{s['median']:.2f}× [{s['q1']:.2f}–{s['q3']:.2f}] | {p['b32_t1']['median_ms']:.4f} | "
            f"{p['bytes'] / 1024:.1f} | {p['macs'] / 1e6:.2f} | {'yes' if p['meets_goal'] else 'no'} |"
        )
    others = sorted({b for p in par["points"] for b in p.get("other_interpreters") or {}})
    for b in others:
        L += [
            "",
            f"The same backbones on {b} (1 thread, batch 1, interleaved in the same rounds): "
            + "; ".join(
                f"{p['label']} {p['other_interpreters'][b]['b1_t1']['median_ms']:.4f} ms "
                f"({p['other_interpreters'][b]['b1_t1']['speedup']['median']:.2f}×)"
                for p in par["points"]
                if b in (p.get("other_interpreters") or {})
            )
            + ".",
        ]
    return L + ([f"\n![pareto]({plot_files['pareto']})"] if "pareto" in plot_files else [])


def pareto_plot(plt, report, path) -> bool:
    par = report.get("pareto") or {}
    pts = par.get("points") or []
    if not pts:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (xf, xl) in zip(
        axes,
        (
            (lambda p: p["b1_t1"]["median_ms"], "ms per image (batch 1, 1 thread, median)"),
            (lambda p: p["bytes"] / 1024, "backbone.tflite KiB"),
        ),
    ):
        xs, ys = [xf(p) for p in pts], [100 * p["error"] for p in pts]
        ax.errorbar(xs, ys, yerr=[100 * p["ci95"] for p in pts], fmt="o-", capsize=3)
        for x, y, p in zip(xs, ys, pts):
            ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6)
        ax.set_xlabel(xl, fontsize=8)
        what = (
            "Lake-style 20-way 1-shot"
            if par.get("protocol") == "lake"
            else f"held-out {par.get('protocol')}"
        )
        ax.set_ylabel(f"{what} error % (95% CI)", fontsize=8)
    fig.suptitle(
        f"Held-out error vs speed and size ({par.get('runs')} runs, int8 bundles)", fontsize=9
    )
    save(plt, fig, path)
    return True


def pareto_readme_table(report) -> list:
    par = report.get("pareto") or {}
    if not par.get("points"):
        return []
    L = [
        "",
        f"Speed against accuracy ({par['protocol']} error through the runtime, {par['runs']} runs; speed-ups "
        f"within interleaved rounds vs {par['reference']}):",
        "",
        "| int8 bundle | conv widths | error | Δ error | ms/image (batch 1) | speed-up | KiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in par["points"]:
        widths = "-".join(str(w) for w in p["widths"]) if p.get("widths") else "as trained"
        L.append(
            f"| {p['label']} | {widths} | {100 * p['error']:.2f}% | {100 * p['error_diff']:+.2f} pt | "
            f"{p['b1_t1']['median_ms']:.4f} | {p['b1_t1']['speedup']['median']:.2f}× | {p['bytes'] / 1024:.1f} |"
        )
    return L
