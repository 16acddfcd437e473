"""A ``metalite bench`` report from its sections: the headline, report.md and the plots.

Each section module (``machine``, ``variants``, ``accuracy``, ``size``, ``latency``, ``pareto``, ``adapt``,
``memory``) holds its measurement, its Markdown, its plot and its headline entry; this module only puts
them in order.
"""

from __future__ import annotations

from pathlib import Path

from . import accuracy, adapt, latency, machine, memory, pareto, size, variants
from .accuracy import data_name
from .fields import get
from .plots import pyplot

PLOTS = {
    "accuracy": accuracy.accuracy_plot,
    "latency": latency.latency_plot,
    "adaptation": adapt.adaptation_plot,
    "size": size.size_plot,
    "pareto": pareto.pareto_plot,
}


def headline(report) -> dict:
    """The ratios report.md and the README lead with (None where a side is missing)."""
    ship = variants.shipped(report)
    h = {
        "shipped_variant": ship,
        "shipped_label": variants.label(report, ship) if ship else None,
        "busy_warning": get(report, "latency", "load", "warning"),
    }
    latency.latency_headline(h, report, ship)
    size.size_headline(h, report, ship)
    accuracy.accuracy_headline(h, report, ship)
    adapt.adaptation_headline(h, report)
    front = get(report, "pareto", "front") or {}
    h["pareto"] = front or None
    h["pareto_best"] = pareto.pareto_best(report)
    return h


def headline_lines(report, h) -> list:
    """report.md's headline: a busy-machine warning, then each section's lines."""
    ship = h.get("shipped_label") or "the bundle's backbone"
    L = ["## Headline", ""]
    if h.get("busy_warning"):
        L += [f"> **Warning**: {h['busy_warning']}.", ""]
    return (
        L
        + latency.latency_headline_lines(h, ship)
        + size.size_headline_lines(h, ship)
        + adapt.adaptation_headline_lines(report, h)
        + pareto.pareto_headline_lines(h)
        + variants.missing_lines(report)
    )


def markdown(report, plot_files: dict | None = None) -> str:
    """report.md: title, headline, then every section's Markdown (``plot_files`` {name: file} to link)."""
    plot_files = plot_files or {}
    h = report.get("headline") or headline(report)
    m = report.get("machine", {})
    L = [
        f"# metalite bench ({report.get('mode')} run)",
        "",
        f"Bundle `{get(report, 'bundle', 'path')}` — trained ({get(report, 'bundle', 'training', 'algorithm')}) on "
        f"{data_name(get(report, 'bundle', 'training', 'data') or '') or 'unrecorded data'}, measured on "
        f"{get(report, 'accuracy', 'data_name')}. Generated {m.get('date')} in {report.get('elapsed_s', 0):.0f} s.",
        "",
    ]
    sections = [
        headline_lines(report, h),
        machine.machine_lines(report),
        accuracy.accuracy_lines(report, plot_files),
        size.size_lines(report, plot_files),
        latency.latency_lines(report, plot_files),
        pareto.pareto_lines(report, plot_files),
        adapt.adaptation_lines(report, plot_files),
        memory.memory_lines(report),
    ]
    for s in sections:
        L += s + [""]
    L += [
        "Regenerate: `metalite bench BUNDLE --out DIR [--model MODEL_DIR ...] [--pareto BUNDLE ...] [--quick]`.",
        "",
    ]
    return "\n".join(L)


def plots(report, out: Path) -> dict:
    """Write the PNGs that have data into ``out``; returns {name: file name} (empty without matplotlib)."""
    plt = pyplot()
    if plt is None:
        return {}
    return {
        name: f"{name}.png"
        for name, fn in PLOTS.items()
        if fn(plt, report, Path(out) / f"{name}.png")
    }
