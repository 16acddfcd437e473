"""Regenerate the README's benchmark section from a ``metalite bench`` report.json.

    python -m metalite.bench.readme [--report benchmarks/reference/report.json] [--readme README.md]
        [--plot benchmarks/reference/latency.png] [--check]

Only the text between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is rewritten; everything else in
the README is left byte for byte. ``--check`` exits 1 if the section is out of date (writes nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from metalite.runtime.files import atomic_write_text

from .headline import METHODS, get, headline
from .machine import processor_text
from .markdown import f, kib, loadavg_text

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _latency_rows(h) -> list:
    ship = h.get("shipped_label")
    rows = []
    for b in (1, 32):
        if h.get(f"speedup_vs_float_tflite_b{b}") is not None:
            rows.append((f"Latency, batch {b} (ms/image, 1 thread)", f"{h[f'int8_ms_b{b}']:.4f} ({ship})",
                         f"{h[f'float_tflite_ms_b{b}']:.4f} (float TFLite)",
                         f"{h[f'speedup_vs_float_tflite_b{b}']:.2f}× faster"))
        elif h.get(f"int8_ms_b{b}") is not None:
            rows.append((f"Latency, batch {b} (ms/image, 1 thread)", f"{h[f'int8_ms_b{b}']:.4f} ({ship})", "", ""))
    if h.get("speedup_vs_int8_tflite_b1") is not None:
        rows.append(("Latency, batch 1, vs the unpruned int8 model", f"{h['int8_ms_b1']:.4f}",
                     f"{h['int8_tflite_ms_b1']:.4f}", f"{h['speedup_vs_int8_tflite_b1']:.2f}× faster"))
    if h.get("keras_tffunction_over_int8_latency_b1") is not None:
        rows.append(("Latency, batch 1, vs TensorFlow (float Keras `tf.function`, all cores)", f"{h['int8_ms_b1']:.4f}",
                     f"{h['keras_tffunction_ms_b1']:.4f}", f"{h['keras_tffunction_over_int8_latency_b1']:.1f}× faster"))
    if h.get("int8_gmacs_b1") is not None:
        rows.append(("Compute, batch 1", f"{h['int8_macs'] / 1e6:.2f} MMAC/image, {h['int8_gmacs_b1']:.1f} GMAC/s",
                     f"{f(h.get('float_tflite_macs') and h['float_tflite_macs'] / 1e6)} MMAC/image (float)", ""))
    return rows


def _other_rows(report, h) -> list:
    rows = []
    if h.get("float_tflite_over_int8_size") is not None:
        rows.append(("Backbone size", kib(h["int8_bytes"]), f"{kib(h['float_tflite_bytes'])} (float TFLite)",
                     f"{h['float_tflite_over_int8_size']:.1f}× smaller"))
    acc, ship = get(report, "accuracy", "results") or {}, h.get("shipped_variant")
    for key in ("5way1shot", "20way1shot"):
        a, fl = get(acc, ship, key), get(acc, "float_keras", key) or get(acc, "float_tflite", key)
        if a and fl:
            which = "held-out" if get(report, "accuracy", "heldout") in (None, True) else "test split of other data"
            rows.append((f"Accuracy {key} ({which})", f"{a['mean']:.3f} ± {a['ci95']:.3f}",
                         f"{fl['mean']:.3f} ± {fl['ci95']:.3f} (float)", f"{(a['mean'] - fl['mean']) * 100:+.1f} pts"))
    for key, res in (get(report, "adaptation", "settings") or {}).items():
        me = res.get("metalite", {})
        for m in ("tflite_odt", "keras_finetune", "pycoral_sgd"):
            o = res.get(m, {})
            if me.get("total_ms") and "total_ms" in o:
                rows.append((f"Learn a {key} task vs {METHODS[m]}", f"{me['total_ms']:.1f} ms, acc {me['accuracy']:.2f}",
                             f"{o['total_ms']:.1f} ms, acc {o['accuracy']:.2f}",
                             f"{o['total_ms'] / me['total_ms']:.1f}× faster"))
    peak = get(report, "memory", "runs", "ai_edge_litert", "peak_rss_mib")
    if peak:
        rows.append(("Peak RSS, runtime-only process (load, adapt, predict)", f"{peak:.0f} MiB", "", ""))
    return rows


def _pareto_table(report) -> list:
    par = report.get("pareto") or {}
    if not par.get("points"):
        return []
    L = ["", f"Speed against accuracy ({par['protocol']} error through the runtime, {par['runs']} runs; speed-ups "
             f"within interleaved rounds vs {par['reference']}):", "",
         "| int8 bundle | conv widths | error | Δ error | ms/image (batch 1) | speed-up | KiB |",
         "|---|---|---|---|---|---|---|"]
    for p in par["points"]:
        widths = "-".join(str(w) for w in p["widths"]) if p.get("widths") else "as trained"
        L.append(f"| {p['label']} | {widths} | {100 * p['error']:.2f}% | {100 * p['error_diff']:+.2f} pt | "
                 f"{p['b1_t1']['median_ms']:.4f} | {p['b1_t1']['speedup']['median']:.2f}× | {p['bytes'] / 1024:.1f} |")
    return L


def readme_section(report, plot: str | None = "benchmarks/reference/latency.png",
                   source: str = "benchmarks/reference/report.json") -> str:
    """Markdown for between the README's bench markers: the headline table, the Pareto table, one plot."""
    h = report.get("headline") or headline(report)
    m, load = report.get("machine", {}), get(report, "latency", "load") or {}
    others = load.get("other_processes_cores")
    L = [f"Measured by `metalite bench` ({report.get('mode')} run) on {processor_text(m)}, {m.get('cores')} cores, "
         f"Python {m.get('python')}, load average {loadavg_text(load.get('loadavg_before'))} before timing"
         + (f" (other processes used {others:.2f} cores meanwhile)" if others is not None else "")
         + f"; regenerated from `{source}` by `python -m metalite.bench.readme`.", ""]
    if h.get("busy_warning"):
        L += [f"> **Warning**: {h['busy_warning']}.", ""]
    L += ["| | metalite | reference | ratio |", "|---|---|---|---|"]
    L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in _latency_rows(h) + _other_rows(report, h)]
    L += _pareto_table(report)
    if plot:
        L += ["", f"![latency]({plot})"]
    return "\n".join(L)


def replace_between_markers(text: str, body: str) -> str:
    """``text`` with everything strictly between the bench markers replaced by ``body``; ValueError if absent."""
    i = text.find(START)
    j = text.find(END, i + len(START)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ValueError(f"README has no {START} ... {END} markers")
    return text[: i + len(START)] + "\n" + body.strip("\n") + "\n" + text[j:]


def update_readme(readme, report_json, plot: str | None = "benchmarks/reference/latency.png",
                  write: bool = True) -> bool:
    """Rewrite the README's bench section from ``report_json``; returns True if the text changed.

    ``plot``: path of the plot as the README links it (relative to the README). Raises ValueError if the
    README lacks the markers, FileNotFoundError if a file is missing.
    """
    readme, report_json = Path(readme), Path(report_json)
    report = json.loads(report_json.read_text())
    old = readme.read_text(encoding="utf-8")
    try:
        source = os.path.relpath(report_json.resolve(), readme.resolve().parent)
    except ValueError:
        source = str(report_json)
    new = replace_between_markers(old, readme_section(report, plot, source))
    if new != old and write:
        atomic_write_text(readme, new)
    return new != old


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", default="benchmarks/reference/report.json")
    ap.add_argument("--readme", default="README.md")
    ap.add_argument("--plot", default="benchmarks/reference/latency.png",
                    help="plot to link, relative to the README ('' for none)")
    ap.add_argument("--check", action="store_true", help="exit 1 if the section is out of date, write nothing")
    a = ap.parse_args(argv)
    try:
        changed = update_readme(a.readme, a.report, a.plot or None, write=not a.check)
    except (ValueError, OSError) as e:
        print(f"metalite.bench.readme: {e}", file=sys.stderr)
        return 2
    print(f"{a.readme}: {'out of date' if a.check and changed else 'updated' if changed else 'up to date'}")
    return 1 if a.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
