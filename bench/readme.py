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

from metalite.common.files import atomic_write_text

from . import accuracy, adapt, latency, memory, pareto, size
from .fields import get
from .machine import loadavg_text, processor_text
from .report import headline

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def readme_section(
    report,
    plot: str | None = "benchmarks/reference/latency.png",
    source: str = "benchmarks/reference/report.json",
) -> str:
    """Markdown for between the README's bench markers: the headline table, the Pareto table, one plot."""
    h = report.get("headline") or headline(report)
    m, load = report.get("machine", {}), get(report, "latency", "load") or {}
    others = load.get("other_processes_cores")
    L = [
        f"Measured by `metalite bench` ({report.get('mode')} run) on {processor_text(m)}, {m.get('cores')} cores, "
        f"Python {m.get('python')}, load average {loadavg_text(load.get('loadavg_before'))} before timing"
        + (f" (other processes used {others:.2f} cores meanwhile)" if others is not None else "")
        + f"; regenerated from `{source}` by `python -m metalite.bench.readme`.",
        "",
    ]
    if h.get("busy_warning"):
        L += [f"> **Warning**: {h['busy_warning']}.", ""]
    L += ["| | metalite | reference | ratio |", "|---|---|---|---|"]
    rows = (
        latency.latency_readme_rows(h)
        + size.size_readme_rows(h)
        + accuracy.accuracy_readme_rows(report, h)
        + adapt.adaptation_readme_rows(report)
        + memory.memory_readme_rows(report)
    )
    L += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    L += pareto.pareto_readme_table(report)
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


def update_readme(
    readme, report_json, plot: str | None = "benchmarks/reference/latency.png", write: bool = True
) -> bool:
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
    ap.add_argument(
        "--plot",
        default="benchmarks/reference/latency.png",
        help="plot to link, relative to the README ('' for none)",
    )
    ap.add_argument(
        "--check", action="store_true", help="exit 1 if the section is out of date, write nothing"
    )
    a = ap.parse_args(argv)
    try:
        changed = update_readme(a.readme, a.report, a.plot or None, write=not a.check)
    except (ValueError, OSError) as e:
        print(f"metalite.bench.readme: {e}", file=sys.stderr)
        return 2
    print(
        f"{a.readme}: {'out of date' if a.check and changed else 'updated' if changed else 'up to date'}"
    )
    return 1 if a.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
