"""Describe a bundle (directory or .zip): manifest in words, sizes raw and gzipped, stored weight sparsity,
ops, input/output quantization, Edge TPU readiness and checksum verification.

``inspect_bundle`` reads the .tflite flatbuffers directly (no TensorFlow import, no interpreter), so it is
quick; ``runtime_check`` opens the backbone with ``metalite.runtime`` to say how it would run here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from . import edgetpu as _etpu
from .errors import ExportError
from .flatbuf import read_model

_WEIGHT_OPS = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}


def read_bundle_files(path) -> dict:
    """{file name: bytes} of a bundle directory or a .zip of one (files at its root or in one folder)."""
    p = Path(path)
    if p.is_dir():
        if not (p / "manifest.json").is_file():
            raise ExportError(f"{p}: no manifest.json, not a metalite bundle")
        return {f.name: f.read_bytes() for f in sorted(p.iterdir()) if f.is_file()}
    if p.is_file() and zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            mans = sorted(
                (n for n in names if n.rsplit("/", 1)[-1] == "manifest.json"),
                key=lambda n: n.count("/"),
            )
            if not mans:
                raise ExportError(f"{p}: no manifest.json in the zip, not a metalite bundle")
            prefix = mans[0][: -len("manifest.json")]
            return {
                n[len(prefix) :]: z.read(n)
                for n in names
                if n.startswith(prefix) and "/" not in n[len(prefix) :]
            }
    raise ExportError(
        f"{p}: not a bundle directory or .zip" if p.exists() else f"{p}: no such file or directory"
    )


def weight_stats(data: bytes, name: str = "model") -> dict:
    """Stored sparsity (fraction of exact zeros) of every conv/dense weight tensor, and overall.

    A weight fed through QUANTIZE/DEQUANTIZE ops (a fake-quantized graph) is counted as its stored constant."""
    m = read_model(data, name)
    producer = {out: op for op in m.ops for out in op.outputs}
    rows, zeros, total = [], 0, 0
    for op in m.ops:
        pos = _WEIGHT_OPS.get(op.name)
        if pos is None or pos >= len(op.inputs) or op.inputs[pos] < 0:
            continue
        t = m.tensors[op.inputs[pos]]
        while t.data is None and getattr(producer.get(t.index), "name", "") in (
            "QUANTIZE",
            "DEQUANTIZE",
        ):
            t = m.tensors[producer[t.index].inputs[0]]
        if t.data is None:
            continue
        z = int(np.count_nonzero(t.data == 0))
        rows.append(
            {
                "op": op.name,
                "tensor": t.name,
                "shape": t.shape,
                "dtype": t.dtype,
                "size": int(t.data.size),
                "zeros": z,
                "sparsity": z / max(t.data.size, 1),
            }
        )
        zeros, total = zeros + z, total + int(t.data.size)
    return {"tensors": rows, "sparsity": zeros / total if total else 0.0, "weights": total}


def model_kind(summary: dict) -> str:
    """What a .tflite of a bundle is, from its ops and input/output types (``tflite_summary``)."""
    ops, dtype = summary["ops"], (summary.get("input") or {}).get("dtype", "")
    if any(o.startswith("CUSTOM:edgetpu") for o in ops):
        return "compiled for the Edge TPU"
    if dtype.startswith("float") and ("QUANTIZE" in ops or "DEQUANTIZE" in ops):
        return (
            "float32 in and out but fake-quantized: weights and activations pass QUANTIZE/DEQUANTIZE ops (a "
            "quantization-aware graph converted as is, not a float model)"
        )
    if dtype.startswith("float"):
        return "float32, no quantization (for comparison only)"
    return f"{dtype} in and out, full-integer quantized (what the device runs)"


def tflite_summary(data: bytes, name: str) -> dict:
    """Ops with counts, input/output dtype/shape/quantization, weight sparsity of one .tflite."""
    m = read_model(data, name)

    def io(i):
        t = m.tensors[i]
        return {
            "name": t.name,
            "dtype": t.dtype.lower(),
            "shape": t.shape_signature,
            "quantization": {"scale": t.scale[0], "zero_point": t.zero_point[0]}
            if t.scale
            else None,
        }

    return {
        "ops": dict(Counter(op.name for op in m.ops)),
        "n_ops": len(m.ops),
        "input": io(m.inputs[0]) if m.inputs else None,
        "output": io(m.outputs[0]) if m.outputs else None,
        "weights": weight_stats(data, name),
    }


def verify_checksums(manifest: dict, files: dict) -> dict:
    """Compare every file listed in the manifest with its sha256 and size; list missing and unlisted files."""
    problems, listed = [], manifest.get("files", {})
    for name, want in listed.items():
        if name not in files:
            problems.append(f"{name}: missing")
        elif hashlib.sha256(files[name]).hexdigest() != want.get("sha256"):
            problems.append(f"{name}: sha256 mismatch (modified or corrupt)")
        elif want.get("bytes") is not None and len(files[name]) != want["bytes"]:
            problems.append(f"{name}: size {len(files[name])} != {want['bytes']} in the manifest")
    unlisted = sorted(set(files) - set(listed) - {"manifest.json"})
    return {"ok": not problems, "problems": problems, "unlisted": unlisted}


def inspect_bundle(path) -> dict:
    """Everything known about a bundle, as a JSON-ready dict (``render_text`` turns it into words)."""
    files = read_bundle_files(path)
    try:
        manifest = json.loads(files["manifest.json"])
    except (KeyError, ValueError) as e:
        raise ExportError(f"{path}: manifest.json is not valid JSON ({e})") from None
    sizes = {
        n: {"bytes": len(b), "gzip_bytes": len(gzip.compress(b, compresslevel=9, mtime=0))}
        for n, b in files.items()
    }
    models = {n: tflite_summary(b, n) for n, b in files.items() if n.endswith(".tflite")}
    if "edgetpu_report.json" in files:
        report = json.loads(files["edgetpu_report.json"])
    elif "backbone.tflite" in files:
        report = _etpu.check_model(files["backbone.tflite"], "backbone.tflite", static_batch=True)
    else:
        report = None
    edgetpu = (
        None
        if report is None
        else {
            "ready": report["ready"],
            "summary": _etpu.summarize(report),
            "first_unsupported": report["first_unsupported"],
            "compiled_file": "backbone_edgetpu.tflite"
            if "backbone_edgetpu.tflite" in files
            else None,
            "compiler": report.get("compiler", {}).get("message")
            or manifest.get("edgetpu", {}).get("compiler", {}).get("message"),
        }
    )
    return {
        "path": str(path),
        "manifest": manifest,
        "sizes": sizes,
        "models": models,
        "edgetpu": edgetpu,
        "checksums": verify_checksums(manifest, files),
    }


def runtime_check(path) -> dict:
    """How ``metalite.runtime`` runs this bundle's backbone on this machine (``Acceleration`` as a dict plus
    ``summary``), or ``{"error": ...}`` when it cannot open it."""
    import warnings

    from metalite.runtime.bundle import open_bundle
    from metalite.runtime.errors import MetaliteError
    from metalite.runtime.interpreter import describe, open_backbone

    try:
        with warnings.catch_warnings():  # the Edge TPU fallback is reported in the summary instead
            warnings.simplefilter("ignore")
            _, _, acc = open_backbone(open_bundle(path), num_threads=1, delegate="auto")
    except (MetaliteError, OSError) as e:
        return {"error": str(e)}
    return {**acc.as_dict(), "summary": describe(acc)}


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


_STAGE_NAMES = {"pqat": "PQAT", "int8_tflite": "int8 TFLite", "float_int8": "(float model in int8)"}


def _pct(x) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "?"


def _training_line(t: dict) -> str:
    bb = t.get("backbone") or {}
    extras = [f"{t.get('steps')} steps"]
    if t.get("warm_start"):
        ws = t["warm_start"]
        extras[0] += (
            f" from the weights of {ws.get('model')} ({ws.get('episodes')} episodes before)"
        )
    if t.get("rotations"):
        extras.append("rotations as classes")
    if t.get("within_alphabet"):
        extras.append(f"{_pct(float(t['within_alphabet']))} within-alphabet episodes")
    if t.get("augment"):
        extras.append(
            "augmented (" + ", ".join(f"{k} {v:g}" for k, v in t["augment"].items()) + ")"
        )
    hp = t.get("hparams") or {}
    filters = f"widths {bb['widths']}" if bb.get("widths") else f"{bb.get('filters')} filters"
    return (
        f"training: {t.get('algorithm')} on {t.get('data')}, {t.get('ways')}-way {t.get('shots')}-shot episodes "
        f"with {t.get('queries')} queries, {', '.join(extras)}; backbone {bb.get('kind')} ({filters}, "
        f"{bb.get('embedding_dim')}-d embedding); lr {hp.get('lr')}, seed {t.get('seed')}"
    )


def _compression_lines(c: dict) -> list:
    if not c or c.get("stage", "float") == "float":
        return ["compression: none (float model, quantized to int8 after training)"]
    steps = c.get("steps") or {}
    what, done = [], []
    if steps.get("distill"):
        shifts = c.get("distill_shifts") or 0
        what.append(
            "distilled fine-tuning first"
            + (f", the teacher averaged over {shifts} shifts" if shifts else "")
        )
        done.append(f"{steps['distill']} (distillation)")
    st = c.get("structured") or {}
    if st:
        what.append(
            f"structured pruning: {st.get('filters_removed')} of {st.get('filters_prunable')} filters removed "
            f"({st.get('score')} scores, per {st.get('scope')}), widths {st.get('widths_before')} -> {st.get('widths')}"
        )
        done.append(f"{steps.get('structured', '?')} (structured)")
    if c.get("sparsity"):
        what.append(
            f"magnitude pruning to {_pct(c.get('sparsity'))} per conv/dense kernel "
            f"({_pct(c.get('kernel_sparsity'))} of their weights are zero)"
        )
        done.append(f"{steps.get('prune', '?')} (pruning)")
    if c.get("pqat"):
        what.append(
            ("pruning-preserving " if c.get("sparsity") else "") + "quantization-aware training"
        )
    if c.get("distill"):
        what.append(f"distilled from the float model ({c['distill']} loss)")
    if c.get("pqat"):
        done.append(f"{steps.get('qat', 0)} (QAT)")
    lines = [f"compression: {', '.join(what)}; fine-tuned {' + '.join(done) or 0} steps"]
    stages = c.get("stages") or {}
    for task in sorted({k for r in stages.values() for k in r}):
        cells = [
            f"{_STAGE_NAMES.get(name, name)} {_pct(r[task]['mean'])}"
            for name, r in stages.items()
            if task in r
        ]
        lines.append(f"  {task} after each stage: " + ", ".join(cells))
    if stages and sum(int(v or 0) for v in steps.values()):
        lines.append(
            f"  (the stages after float had {sum(int(v or 0) for v in steps.values())} more fine-tuning "
            "episodes than the float model: a gain is that training, not compression)"
        )
    return lines


def _accuracy_lines(accuracy: dict) -> list:
    lines = []
    for task, acc in (accuracy or {}).items():
        if not isinstance(acc, dict):
            continue
        source = acc.get("data") or (
            f"alphabets {', '.join(acc['held_out']['test'])}" if acc.get("held_out") else ""
        )
        if "mean" in acc:
            lines.append(
                f"accuracy {task}: {_pct(acc['mean'])} ± {100 * acc.get('ci95', float('nan')):.1f} "
                f"({acc.get('episodes')} episodes; {source})"
            )
        elif "error" in acc:
            lines.append(
                f"Lake-style error {task}: {_pct(acc['error'])} ± {100 * acc.get('ci95', float('nan')):.1f} "
                f"({acc.get('runs')} runs of {acc.get('ways')}-way 1-shot; {source})"
            )
    return lines


def _describe(m: dict) -> list:
    inp, out, head = m.get("input", {}), m.get("output", {}), m.get("head", {})
    pre = inp.get("preprocess", {})
    q = lambda d: f"scale {d['scale']:.6g}, zero point {d['zero_point']}" if d else "not quantized"  # noqa: E731
    layers = ", ".join(f"{l['units']} {l['activation']}" for l in head.get("layers", [])) or "none"
    ad = head.get("adaptation", {})
    lines = [
        f"format {m.get('format')} v{m.get('format_version')}, metalite {m.get('metalite_version')}, "
        f"created {m.get('created')}",
        f"input: {inp.get('dtype')} {inp.get('layout', '')} {inp.get('shape')}; {q(inp.get('quantization'))}; "
        f"pixels: {'grayscale' if pre.get('color') == 'L' else pre.get('color')}"
        f"{' on background ' + str(pre['background']) if pre.get('background') else ''}, {pre.get('resize')} resize, "
        f"{'inverted (ink = 1), ' if pre.get('invert') else ''}range {pre.get('range')}",
        f"output: {out.get('dtype')} embedding of {out.get('embedding_dim')}; {q(out.get('quantization'))}",
        f"head: hidden layers [{layers}]; adaptation {ad.get('steps')} steps, lr {ad.get('lr')}, "
        f"scale {ad.get('scale')}, adapts {ad.get('adapt')}, shift averaging (tta) {ad.get('tta', 0)} copies"
        + "".join(
            f", {k} {v}" for k, v in ad.items() if k not in ("steps", "lr", "scale", "adapt", "tta")
        ),
    ]
    if m.get("training"):
        lines.append(_training_line(m["training"]))
    lines += _compression_lines(m.get("compression") or {}) + _accuracy_lines(m.get("accuracy"))
    qc = m.get("quantization_check")
    if qc:
        lines.append(
            f"int8 vs Keras embeddings: cosine min {qc['cosine_min']:.4f}, mean {qc['cosine_mean']:.4f} "
            f"on {qc['images']} images"
        )
    return lines


def render_text(info: dict) -> str:
    """A human-readable report of ``inspect_bundle``'s result."""
    out = [f"bundle {info['path']}"] + ["  " + l for l in _describe(info["manifest"])]
    out.append("files (raw / gzip -9):")
    for n, s in info["sizes"].items():
        out.append(f"  {n:28s} {_kb(s['bytes']):>10s} / {_kb(s['gzip_bytes']):>10s}")
    for n, mdl in info["models"].items():
        w = mdl["weights"]
        ops = ", ".join(f"{k} x{v}" for k, v in mdl["ops"].items())
        out.append(f"{n}: {model_kind(mdl)}")
        out.append(f"  {mdl['n_ops']} ops ({ops})")
        for side in ("input", "output"):
            d = mdl[side]
            qq = d["quantization"]
            out.append(
                f"  {side}: {d['dtype']} {d['shape']}"
                + (f", scale {qq['scale']:.6g} zero point {qq['zero_point']}" if qq else "")
            )
        out.append(f"  weights: {w['weights']} values, {w['sparsity']:.1%} exact zeros")
        for t in w["tensors"]:
            out.append(
                f"    {t['op']:18s} {str(t['shape']):18s} {t['dtype']:6s} sparsity {t['sparsity']:.1%}"
            )
    e = info["edgetpu"]
    if e:
        out.append(f"Edge TPU: {'ready' if e['ready'] else 'not fully mappable'} - {e['summary']}")
        out.append(
            f"  compiled: {e['compiled_file'] or 'no'}"
            + (f" ({e['compiler']})" if e.get("compiler") else "")
        )
    rt = info.get("runtime")
    if rt:
        out.append(
            "runtime on this machine: "
            + (rt.get("summary") or f"cannot open the backbone: {rt.get('error')}")
        )
    c = info["checksums"]
    out.append(
        "checksums: "
        + ("all files match the manifest" if c["ok"] else "FAILED: " + "; ".join(c["problems"]))
    )
    if c["unlisted"]:
        out.append(f"  files not in the manifest: {', '.join(c['unlisted'])}")
    return "\n".join(out)
