"""Write a bundle (docs/DESIGN.md, "Bundle"): int8 backbone, head.npz, manifest with checksums, Edge TPU report.

Atomic: everything is built in a hidden ``.<name>.partial-*`` directory next to ``out_dir`` and renamed
into place at the end, so an interrupted export never leaves a directory that looks like a bundle. An
existing bundle is replaced only when ``overwrite=True``, and only at that final rename.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from metalite.common.files import atomic_write, atomic_write_bytes, replace_dir, replace_refusal
from metalite.common.progress import as_progress
from metalite.runtime.names import bundle_file_problem
from metalite.runtime.preprocess import settings as preprocess_settings

from . import edgetpu as _etpu
from . import tflite as _tfl
from .errors import ExportError

BUNDLE_FORMAT = "metalite-bundle"
BUNDLE_FORMAT_VERSION = 1
META_SECTIONS = ("training", "compression", "accuracy")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _prepare(out_dir, overwrite: bool) -> Path:
    """Check the destination before any slow work: refuse an existing path unless it is a bundle and overwrite."""
    out = Path(out_dir).expanduser().absolute()
    refusal = replace_refusal(out, overwrite, "manifest.json", "bundle")
    if refusal:
        raise ExportError(refusal)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write to {parent}: permission denied")
    return out


def _edgetpu(
    tmp: Path, backbone_model, representative, cpu_bytes: bytes, compile_it: bool, say
) -> dict:
    """Edge TPU report (of the static batch-1 model if compiling, else of the CPU model with batch 1 assumed)
    and, if asked, the compiled ``backbone_edgetpu.tflite``; returns the manifest's ``edgetpu`` section."""
    section = {"report_file": "edgetpu_report.json", "file": None}
    if compile_it:
        say("converting the static batch-1 model for the Edge TPU")
        b1 = _tfl.convert_int8(backbone_model, representative, batch=1)
        report = _etpu.check_model(b1, "backbone.tflite (static batch 1)")
        scratch = tmp / ".edgetpu"
        scratch.mkdir()
        atomic_write_bytes(scratch / "backbone.tflite", b1)
        say("running edgetpu_compiler")
        result = _etpu.compile_edgetpu(scratch / "backbone.tflite", scratch)
        if result["status"] == "compiled":
            os.rename(result["output"], tmp / "backbone_edgetpu.tflite")
            section["file"] = "backbone_edgetpu.tflite"
        shutil.rmtree(scratch)
        report["compiler"] = {k: v for k, v in result.items() if k != "output"}
        section["compiler"] = {
            "status": result["status"],
            "message": result["message"],
            "version": result["stats"].get("version"),
        }
    else:
        report = _etpu.check_model(cpu_bytes, "backbone.tflite", static_batch=True)
        section["compiler"] = {
            "status": "not_requested",
            "message": "not compiled (export --edgetpu compiles)",
            "version": None,
        }
    atomic_write_bytes(tmp / "edgetpu_report.json", json.dumps(report, indent=2).encode())
    section.update(ready=report["ready"], summary=_etpu.summarize(report))
    return section


def _manifest(io: dict, head_spec, meta: dict, files: dict, extra: dict) -> dict:
    from metalite.runtime.version import __version__

    head_cfg = head_spec.config()
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "metalite_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z"),
        "input": {
            "shape": io["input"]["shape"],
            "dtype": io["input"]["dtype"],
            "layout": "NHWC",
            "preprocess": preprocess_settings(int(io["input"]["shape"][-1])),
            "quantization": io["input"]["quantization"],
        },
        "output": {
            "embedding_dim": int(io["output"]["shape"][-1]),
            "dtype": io["output"]["dtype"],
            "quantization": io["output"]["quantization"],
        },
        "backbone": extra["backbone"],
        "head": {
            "file": "head.npz",
            "layers": head_cfg["layers"],
            "adaptation": head_cfg["adaptation"],
        },
        **{k: meta.get(k, {}) for k in META_SECTIONS},
        "quantization_check": extra["check"],
        "edgetpu": extra["edgetpu"],
        "files": files,
    }


def _float_bytes(backbone_model, float_model) -> bytes:
    """Float32 TFLite of ``float_model`` (a Keras model), or of the backbone itself for ``True``; never of a
    fake-quantized (QAT) graph, which would be float in name only."""
    model = backbone_model if float_model is True else float_model
    if _tfl.is_quantize_annotated(model):
        raise ExportError(
            "the float comparison model must be a plain float backbone, not a quantization-aware one "
            "(pass its float twin: metalite.training.pruning.float_twin)"
        )
    return _tfl.convert_float(model)


def _build(
    tmp: Path, backbone_model, head_spec, rep, meta, edgetpu, float_model, say, evaluate=None
) -> dict:
    from metalite.runtime.head import save_head

    from .inspect import weight_stats

    dim = int(backbone_model.outputs[0].shape[-1])
    if head_spec.weights and int(head_spec.weights[0][0].shape[0]) != dim:
        raise ExportError(
            f"head expects {head_spec.weights[0][0].shape[0]}-d embeddings, backbone gives {dim}"
        )
    say(f"converting the backbone to full-integer int8 ({len(rep)} representative images)")
    cpu = _tfl.convert_int8(backbone_model, rep, batch=None)
    io = _tfl.io_details(cpu)
    if io["input"]["batch"] != -1:
        raise ExportError("converted backbone has a static batch dimension; expected a dynamic one")
    _tfl.interpreter(cpu, batch=32)  # the runtime resizes to 32: prove it allocates
    atomic_write_bytes(tmp / "backbone.tflite", cpu)
    say("checking int8 embeddings against the Keras model")
    check = _tfl.cosine_agreement(
        _tfl.run_int8(cpu, rep, batch=min(32, len(rep))),
        np.asarray(backbone_model(rep, training=False)),
    )
    check = {
        "cosine_min": check["min"],
        "cosine_mean": check["mean"],
        "images": check["n"],
        "reference": "keras model, representative images",
    }
    if evaluate is not None:
        say(
            "measuring few-shot accuracy of the int8 backbone (head-only adaptation, held-out classes)"
        )
        meta = {**meta, "accuracy": {**meta.get("accuracy", {}), **evaluate(cpu)}}
    head_path = tmp / "head.npz"
    atomic_write(head_path, lambda f: save_head(head_spec, f))
    backbone = {
        "file": "backbone.tflite",
        "batch": "dynamic",
        "edgetpu_file": None,
        "float_file": None,
        "qat": _tfl.is_quantize_annotated(backbone_model),
        "weight_sparsity": weight_stats(cpu)["sparsity"],
    }
    if float_model is not None and float_model is not False:
        say("converting the float32 comparison model")
        atomic_write_bytes(tmp / "backbone_float.tflite", _float_bytes(backbone_model, float_model))
        backbone["float_file"] = "backbone_float.tflite"
    section = _edgetpu(tmp, backbone_model, rep, cpu, edgetpu, say)
    backbone["edgetpu_file"] = section.pop("file")
    files = {
        p.name: {"sha256": sha256_bytes(p.read_bytes()), "bytes": p.stat().st_size}
        for p in sorted(tmp.iterdir())
        if p.is_file()
    }
    bad = next((bundle_file_problem(n) for n in files if bundle_file_problem(n)), None)
    if (
        bad
    ):  # the rule open_bundle, fleet publish and the device apply: caught here, not on the device
        raise ExportError(f"cannot write the bundle: {bad}")
    manifest = _manifest(
        io, head_spec, meta or {}, files, {"backbone": backbone, "check": check, "edgetpu": section}
    )
    atomic_write_bytes(
        tmp / "manifest.json", json.dumps(manifest, indent=2).encode()
    )  # written last
    return manifest


def write_bundle(
    out_dir,
    backbone_model,
    head_spec,
    representative,
    meta: dict | None = None,
    edgetpu: bool = False,
    float_model=None,
    progress=None,
    overwrite: bool = False,
    evaluate=None,
) -> Path:
    """Export ``backbone_model`` (tf_keras, float or QAT/PQAT-annotated) and ``head_spec`` as a bundle at ``out_dir``.

    ``representative``: float32 (N, H, W, C) model-input images (C = 1 gray, 3 RGB) for calibration and the
    int8-vs-Keras check.
    ``float_model``: also write ``backbone_float.tflite``, float32 with no quantization at all: ``True`` for a
    float backbone, or the float Keras model with the backbone's weights (for a QAT backbone).
    ``progress``: a ``metalite.common.progress.Progress`` for news lines (None: silent).
    ``meta``: the manifest's ``training``, ``compression`` and ``accuracy`` sections. ``edgetpu``: also convert
    a batch-1 model and run ``edgetpu_compiler`` if installed. ``evaluate(tflite_bytes) -> {name: result}``:
    accuracy of the converted int8 model, merged into the manifest's ``accuracy`` section.
    Raises ExportError with a one-line message.
    """
    meta = dict(meta or {})
    unknown = set(meta) - set(META_SECTIONS)
    if unknown:
        raise ExportError(
            f"unknown meta sections {sorted(unknown)}; expected {', '.join(META_SECTIONS)}"
        )
    log = as_progress(progress).log
    say = lambda msg: log(f"export: {msg}")  # noqa: E731
    out = _prepare(out_dir, overwrite)
    rep = np.asarray(representative, np.float32)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(
            tmp, 0o777 & ~umask
        )  # mkdtemp makes it 0700; a bundle is as readable as any new directory
    except OSError as e:
        raise ExportError(f"cannot write to {out.parent}: {e.strerror}") from None
    try:
        manifest = _build(
            tmp, backbone_model, head_spec, rep, meta, edgetpu, float_model, say, evaluate
        )
        replace_dir(tmp, out)  # an old bundle is set aside first and removed only after
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportError(
            f"writing the bundle failed: {e.strerror or e} ({e.filename or out})"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(
        f"wrote {out} ({sum(f['bytes'] for f in manifest['files'].values())} bytes); "
        f"Edge TPU: {manifest['edgetpu']['compiler']['message'] if edgetpu else manifest['edgetpu']['summary']}"
    )
    return out
