"""The ``size`` section of ``metalite bench``: bytes (raw and gzip -9), parameters, stored sparsity and MACs."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from .cost import keras_macs, tflite_macs
from .fields import f, get, kib, ratio
from .plots import save
from .variants import label


def _gz(raw: bytes) -> int:
    return len(gzip.compress(raw, 9, mtime=0))


def tflite_size(path) -> dict:
    from metalite.export.inspect import weight_stats

    raw = Path(path).read_bytes()
    ws = weight_stats(raw, Path(path).name)
    return {
        "bytes": len(raw),
        "gzip_bytes": _gz(raw),
        "parameters": int(ws["weights"]),
        "sparsity": float(ws["sparsity"]),
        "macs": tflite_macs(raw, Path(path).name),
        "what": f"{Path(path).name} (conv/dense weights counted as parameters)",
    }


def keras_size(model) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "backbone.weights.h5"
        model.save_weights(str(p))
        raw = p.read_bytes()
    kern = [w.numpy() for w in model.weights if len(w.shape) >= 2]
    zeros, total = sum(int((w == 0).sum()) for w in kern), sum(w.size for w in kern)
    return {
        "bytes": len(raw),
        "gzip_bytes": _gz(raw),
        "parameters": int(model.count_params()),
        "sparsity": zeros / total if total else 0.0,
        "macs": keras_macs(model),
        "what": "tf_keras backbone.weights.h5 (all parameters incl. BatchNorm)",
    }


def size_section(variants, bundle) -> dict:
    out = {
        key: (tflite_size(v.path) if v.path is not None else keras_size(v.keras))
        for key, v in variants.items()
    }
    head = Path(bundle.head_path).read_bytes()
    out["head.npz"] = {"bytes": len(head), "gzip_bytes": _gz(head)}
    return out


# ----------------------------------------------------------------------------- headline, report.md, plot, README rows
def size_headline(h, report, ship) -> None:
    """The headline's bytes and MACs of the shipped variant and the baselines, and the size ratios."""
    size = report.get("size") or {}
    h["int8_bytes"], h["int8_gzip_bytes"] = get(size, ship, "bytes"), get(size, ship, "gzip_bytes")
    h["int8_macs"] = get(size, ship, "macs")
    for ref in ("float_tflite", "int8_tflite"):
        h[f"{ref}_bytes"], h[f"{ref}_macs"] = get(size, ref, "bytes"), get(size, ref, "macs")
        h[f"{ref}_over_int8_size"] = (
            ratio(h[f"{ref}_bytes"], h["int8_bytes"]) if ref != ship else None
        )


def size_lines(report, plot_files) -> list:
    L = [
        "## size",
        "",
        "| variant | bytes | gzip -9 | parameters | stored sparsity | MMACs/image | what |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, s in (report.get("size") or {}).items():
        L.append(
            f"| {label(report, k)} | {s['bytes']} | {s['gzip_bytes']} | {s.get('parameters', '')} | "
            f"{f(s.get('sparsity'), '{:.1%}') if 'sparsity' in s else ''} | "
            f"{f(s['macs'] / 1e6, '{:.2f}') if s.get('macs') else ''} | {s.get('what', '')} |"
        )
    return L + ([f"\n![size]({plot_files['size']})"] if "size" in plot_files else [])


def size_plot(plt, report, path) -> bool:
    avail = get(report, "variants", "available") or {}
    size = {k: v for k, v in (report.get("size") or {}).items() if k in avail}
    if not size:
        return False
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    names = list(size)
    ax.bar(
        [i - 0.2 for i in range(len(names))],
        [size[n]["bytes"] / 1024 for n in names],
        0.4,
        label="raw",
    )
    ax.bar(
        [i + 0.2 for i in range(len(names))],
        [size[n]["gzip_bytes"] / 1024 for n in names],
        0.4,
        label="gzip -9",
    )
    ax.set_xticks(range(len(names)), [label(report, n) for n in names], fontsize=6, rotation=15)
    ax.set_ylabel("KiB")
    ax.legend(fontsize=7)
    ax.set_title("Backbone file size, raw and gzip -9", fontsize=9)
    save(plt, fig, path)
    return True


def size_headline_lines(h, ship) -> list:
    """The headline's size lines: the shipped backbone against the float and unpruned int8 files."""
    L = []
    for ref, what in (("float_tflite", "float TFLite"), ("int8_tflite", "unpruned int8 TFLite")):
        if h.get(f"{ref}_over_int8_size") is not None:
            L.append(
                f"- Size, {ship} vs {what}: {h[f'{ref}_over_int8_size']:.1f}× smaller "
                f"({kib(h['int8_bytes'])} vs {kib(h[f'{ref}_bytes'])}; gzip {kib(h['int8_gzip_bytes'])})."
            )
    return L


def size_readme_rows(h) -> list:
    """The README's size row: the shipped backbone against float TFLite."""
    rows = []
    if h.get("float_tflite_over_int8_size") is not None:
        rows.append(
            (
                "Backbone size",
                kib(h["int8_bytes"]),
                f"{kib(h['float_tflite_bytes'])} (float TFLite)",
                f"{h['float_tflite_over_int8_size']:.1f}× smaller",
            )
        )
    return rows
