"""``metalite bench``: accuracy, size, latency, Pareto, adaptation and memory of a bundle, on this machine.

``run_bench(bundle, out, quick=..., model_dirs=[...], pareto=[...])`` writes ``report.json``, ``report.md``
and PNG plots into ``out`` and returns the report dict. One module per section:

- ``machine``: CPU, libraries, BLAS; how busy the machine was while timing.
- ``variants``: the backbones compared, each named for what it is, or why missing.
- ``accuracy``, ``size`` (with MACs per image), ``latency`` (interleaved rounds in ``timing`` worker
  processes), ``pareto`` (held-out error vs time and bytes over several bundles), ``adaptation``
  (``adapt``), ``memory``.
- ``report``: the headline, then the plots and report.md from every section's writers.

TensorFlow is imported only for what needs it (Keras variants, conversions, the ODT and Keras alternatives).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from metalite.common.files import atomic_write_text
from metalite.training.datasets import HELDOUT_SPLIT

from .accuracy import accuracy_section, is_heldout, load_heldout
from .adapt import run_adaptation
from .latency import latency_section
from .machine import machine_info
from .memory import memory_section
from .pareto import pareto_section
from .report import headline, markdown
from .report import plots as write_plots
from .size import size_section
from .variants import find_variants

FULL = {
    "episodes": 600,
    "configs": [(5, 1), (5, 5), (20, 1), (20, 5)],
    "within": True,
    "warmup": 10,
    "rounds": 15,
    "calls": 20,
    "keras_rounds": 7,
    "keras_calls": 5,
    "adapt_tasks": 10,
    "pareto_runs": 1000,
    "build_tflite_venv": True,
}
QUICK = {
    "episodes": 100,
    "configs": [(5, 1), (20, 1)],
    "within": True,
    "warmup": 3,
    "rounds": 5,
    "calls": 5,
    "keras_rounds": 3,
    "keras_calls": 2,
    "adapt_tasks": 3,
    "pareto_runs": 100,
    "build_tflite_venv": False,
}


def _say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def bench_data(manifest: dict, data_spec: str | None) -> str:
    """The data to benchmark on: ``data_spec``, else the bundle's training data if it is the built-in glyphs
    (a manifest records file names only, never where they are: ``datasets.portable_spec``)."""
    from metalite.training.datasets import DataError, parse_spec, spec_with_dirs

    if data_spec:
        parse_spec(data_spec)
        return data_spec
    recorded = (manifest.get("training") or {}).get("data") or "glyphs"
    if recorded.strip() != "glyphs":
        raise DataError(
            f"the bundle was trained on {recorded}; pass --data {spec_with_dirs(recorded)} with where those "
            "files are on this machine"
        )
    return recorded


def _representative(data_spec, size):
    """representative(n): n float32 training images of ``data_spec`` (to quantize the float model)."""

    def pick(n):
        from metalite.training.datasets import load_data, representative_inputs

        return representative_inputs(load_data(data_spec, size, "train"), n)

    return pick


def _measure(report, bundle, data, spec, variants, cfg, threads, seed, pareto, out, say) -> None:
    """Fill the measured sections of ``report`` in order."""
    report["accuracy"] = accuracy_section(variants, data, spec, cfg, seed, say)
    report["size"] = size_section(variants, bundle)
    macs = {k: s.get("macs") for k, s in report["size"].items()}
    report["latency"] = latency_section(variants, cfg, macs, threads, say=say, tmp=out / "variants")
    if pareto:
        paths = list(
            dict.fromkeys(Path(p).resolve() for p in [bundle.root, *pareto])
        )  # BUNDLE may be listed too
        pythons = {
            b: i["python"] for b, i in report["latency"]["interpreters"].items() if i.get("python")
        }
        report["pareto"] = pareto_section(
            paths, data, cfg, say, tmp=out / "variants", pythons=pythons
        )
    else:
        report["pareto"] = {
            "skipped": "pass --pareto BUNDLE (repeatable) with other compressions of the same "
            "model to plot held-out error against time and size"
        }
    say("adaptation")
    report["adaptation"] = run_adaptation(
        bundle.root,
        data,
        tasks=cfg["adapt_tasks"],
        threads=max(threads),
        keras_backbone=variants["float_keras"].keras if "float_keras" in variants else None,
        seed=seed,
        say=say,
    )
    say("memory")
    report["memory"] = memory_section(
        bundle.root,
        out / "variants",
        report["latency"]["interpreters"]["tflite_runtime"].get("python"),
    )


def run_bench(
    bundle_path,
    out,
    quick: bool = False,
    model_dirs=(),
    data_spec: str | None = None,
    threads=(1, 2),
    seed: int = 0,
    pareto=(),
    say=_say,
) -> dict:
    from metalite.runtime import head as headlib
    from metalite.runtime.bundle import open_bundle

    t_start = time.perf_counter()
    cfg = dict(QUICK if quick else FULL)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = open_bundle(bundle_path)
    spec = headlib.load_head(bundle.head_path)
    data_spec = bench_data(bundle.manifest, data_spec)
    size = int(bundle.input_shape[0])
    report = {
        "format": "metalite-bench",
        "format_version": 2,
        "mode": "quick" if quick else "full",
        "bundle": {
            "path": str(bundle_path),
            "manifest_sha256": bundle.manifest_sha256,
            "training": bundle.manifest.get("training"),
            "compression": bundle.manifest.get("compression"),
        },
        "machine": machine_info(),
        "settings": dict(cfg),
    }
    say(f"variants ({report['mode']} run)")
    variants, missing = find_variants(
        bundle, list(model_dirs), out / "variants", data_spec, _representative(data_spec, size)
    )
    report["variants"] = {
        "available": {k: v.as_dict() for k, v in variants.items()},
        "missing": missing,
    }
    say(f"held-out data {data_spec} ({HELDOUT_SPLIT} classes)")
    data = load_heldout(data_spec, size)
    _measure(report, bundle, data, spec, variants, cfg, threads, seed, list(pareto), out, say)
    trained_on = (bundle.manifest.get("training") or {}).get("data")
    if report.get("accuracy"):
        report["accuracy"].update(
            training_data=trained_on, heldout=is_heldout(data_spec, trained_on)
        )
    report["headline"] = headline(report)
    report["elapsed_s"] = time.perf_counter() - t_start
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=_jsonable))
    plots = write_plots(report, out)
    atomic_write_text(out / "report.md", markdown(report, plots))
    say(
        f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(plots)} plots in {report['elapsed_s']:.0f} s"
    )
    return report


def _jsonable(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
