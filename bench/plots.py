"""PNG plots of a ``metalite bench`` report; each one's title and axis labels say exactly what it shows."""
from __future__ import annotations

import textwrap
from pathlib import Path

from .headline import METHODS, get, label


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _save(plt, fig, path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_plot(plt, report, path) -> bool:
    acc = get(report, "accuracy", "results") or {}
    if not acc:
        return False
    keys = sorted({k for r in acc.values() for k in r})
    fig, ax = plt.subplots(figsize=(max(6.5, 1.4 * len(keys)), 4.4))
    w = 0.8 / max(1, len(acc))
    for i, (v, res) in enumerate(acc.items()):
        xs = [j + i * w for j, k in enumerate(keys) if k in res]
        ax.bar(xs, [res[k]["mean"] for k in keys if k in res], w, yerr=[res[k]["ci95"] for k in keys if k in res],
               label=label(report, v), capsize=2)
    ax.set_xticks([j + w * (len(acc) - 1) / 2 for j in range(len(keys))], keys, rotation=20, fontsize=8)
    ax.set_ylabel("accuracy (mean, 95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    a = report.get("accuracy") or {}
    ax.set_title(textwrap.fill(f"Held-out accuracy: {a.get('data_name')}, {a.get('split')} classes", 70), fontsize=9)
    _save(plt, fig, path)
    return True


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
    err = [[m - r["q1_ms"] for m, (_, r) in zip(meds, rows)], [r["q3_ms"] - m for m, (_, r) in zip(meds, rows)]]
    ax.barh(range(len(rows)), meds, xerr=err, capsize=2, color="tab:blue")
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel(f"ms per image, log scale\n(median of {lat.get('rounds')} interleaved rounds; "
                  "whiskers: quartiles over rounds)", fontsize=8)
    ax.set_title("Backbone latency, 1 interpreter thread" + ("  [machine was busy]" if get(lat, "load", "busy")
                                                           else ""), fontsize=9)
    _save(plt, fig, path)
    return True


def adaptation_plot(plt, report, path) -> bool:
    settings = get(report, "adaptation", "settings") or {}
    keys = [k for k, r in settings.items() if "skipped" not in r]
    if not keys:
        return False
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 3.6), squeeze=False)
    parts = (("embed_ms", "embedding"), ("head_ms", "head fitting"), ("total_ms", "total"))
    for ax, key in zip(axes[0], keys):
        ms = [m for m in METHODS if "total_ms" in settings[key].get(m, {})]
        for i, (field, name) in enumerate(parts):
            ax.bar([j + (i - 1) * 0.27 for j in range(len(ms))], [settings[key][m].get(field) or 0 for m in ms],
                   0.27, label=name)
        names = [textwrap.fill(METHODS[m], 14) + f"\nacc {settings[key][m]['accuracy']:.2f}" for m in ms]
        ax.set_xticks(range(len(ms)), names, fontsize=6)
        ax.set_ylabel("ms per task (median), log scale")
        ax.set_yscale("log")
        ax.set_title(f"Learning a {key} task: embedding, head fitting, total", fontsize=8)
        ax.legend(fontsize=6)
    _save(plt, fig, path)
    return True


def size_plot(plt, report, path) -> bool:
    avail = get(report, "variants", "available") or {}
    size = {k: v for k, v in (report.get("size") or {}).items() if k in avail}
    if not size:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    names = list(size)
    ax.bar([i - 0.2 for i in range(len(names))], [size[n]["bytes"] / 1024 for n in names], 0.4, label="raw")
    ax.bar([i + 0.2 for i in range(len(names))], [size[n]["gzip_bytes"] / 1024 for n in names], 0.4, label="gzip -9")
    ax.set_xticks(range(len(names)), [label(report, n) for n in names], fontsize=6, rotation=15)
    ax.set_ylabel("KiB")
    ax.legend(fontsize=7)
    ax.set_title("Backbone file size, raw and gzip -9", fontsize=9)
    _save(plt, fig, path)
    return True


def pareto_plot(plt, report, path) -> bool:
    par = report.get("pareto") or {}
    pts = par.get("points") or []
    if not pts:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (xf, xl) in zip(axes, ((lambda p: p["b1_t1"]["median_ms"], "ms per image (batch 1, 1 thread, median)"),
                                   (lambda p: p["bytes"] / 1024, "backbone.tflite KiB"))):
        xs, ys = [xf(p) for p in pts], [100 * p["error"] for p in pts]
        ax.errorbar(xs, ys, yerr=[100 * p["ci95"] for p in pts], fmt="o-", capsize=3)
        for x, y, p in zip(xs, ys, pts):
            ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6)
        ax.set_xlabel(xl, fontsize=8)
        what = "Lake-style 20-way 1-shot" if par.get("protocol") == "lake" else f"held-out {par.get('protocol')}"
        ax.set_ylabel(f"{what} error % (95% CI)", fontsize=8)
    fig.suptitle(f"Held-out error vs speed and size ({par.get('runs')} runs, int8 bundles)", fontsize=9)
    _save(plt, fig, path)
    return True


PLOTS = {"accuracy": accuracy_plot, "latency": latency_plot, "adaptation": adaptation_plot, "size": size_plot,
         "pareto": pareto_plot}


def plots(report, out: Path) -> dict:
    """Write the PNGs that have data into ``out``; returns {name: file name} (empty without matplotlib)."""
    plt = _plt()
    if plt is None:
        return {}
    return {name: f"{name}.png" for name, fn in PLOTS.items() if fn(plt, report, Path(out) / f"{name}.png")}
