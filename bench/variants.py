"""The backbone variants ``metalite bench`` compares, each named for what it is, found or made when possible.

- ``float_keras``: the float tf_keras model of the float model directory (``--model``, stage "float").
- ``float_tflite``: float32 TFLite of that float model (before any compression), or an uncompressed
  bundle's own ``backbone_float.tflite``.
- ``pruned_float_tflite``: float32 TFLite of the compressed model: the bundle's own ``backbone_float.tflite``,
  else the pruned stage of ``--model`` of the compressed model directory (before quantization-aware training).
- ``int8_tflite``: int8 TFLite of the model without pruning: the bundle's backbone when the bundle is not
  compressed, else post-training int8 of the float model.
- ``int8_pruned_tflite``: the compressed bundle's ``backbone.tflite``, labelled with its compression
  (filters removed, sparsity).

A bundle's ``backbone_float.tflite`` (``export --float``) is its own weights in float32: the float
baseline of an uncompressed bundle, the pruned float of a compressed one. Older exports wrote the PQAT
graph run in float (fake-quant ops) instead, which is not a float model: it is reported as such and never
passed off as a baseline.
"""

from __future__ import annotations

from pathlib import Path

from .fields import get

ORDER = ("float_keras", "float_tflite", "pruned_float_tflite", "int8_tflite", "int8_pruned_tflite")
# A bundle whose weights are at most this sparse, with no filters removed, counts as not pruned.
PRUNED_SPARSITY = 0.05
FAKE_QUANT_OPS = ("QUANTIZE", "DEQUANTIZE", "FAKE_QUANT")


class Variant:
    """One backbone to measure: a .tflite ``path`` or a Keras model ``keras``, its label and origin."""

    def __init__(self, key, label, path=None, keras=None, source=""):
        self.key, self.label, self.path, self.keras, self.source = key, label, path, keras, source

    def as_dict(self):
        return {
            "label": self.label,
            "file": str(self.path) if self.path else None,
            "source": self.source,
        }


def compression_of(manifest: dict) -> dict:
    """{"structured": fraction of filters removed, "sparsity": weight sparsity, "qat": bool} of a bundle."""
    comp = manifest.get("compression") or {}
    st = comp.get("structured") or {}
    sp = comp.get("sparsity")
    if sp is None:
        sp = (manifest.get("backbone") or {}).get("weight_sparsity") or 0.0
    return {
        "structured": float(st.get("fraction") or 0.0),
        "sparsity": float(sp or 0.0),
        "qat": bool(comp.get("pqat")),
        "widths": st.get("widths"),
    }


def is_compressed(manifest: dict) -> bool:
    c = compression_of(manifest)
    return c["structured"] > 0 or c["sparsity"] > PRUNED_SPARSITY


def describe(c: dict) -> str:
    """'50% of filters removed + 50% sparse' style description of ``compression_of``'s result."""
    parts = []
    if c.get("structured"):
        parts.append(f"{100 * c['structured']:.0f}% of filters removed")
    if c.get("sparsity", 0) > PRUNED_SPARSITY:
        parts.append(f"{100 * c['sparsity']:.0f}% sparse")
    return " + ".join(parts) or "not pruned"


def fake_quant_ops(path) -> int:
    """How many QUANTIZE / DEQUANTIZE / FAKE_QUANT ops a .tflite holds (a QAT graph exported in float)."""
    from metalite.export.flatbuf import read_model

    return sum(
        op.name in FAKE_QUANT_OPS for op in read_model(Path(path).read_bytes(), str(path)).ops
    )


def _model_dirs(model_dirs, missing) -> dict:
    """{"float": (dir, cfg, backbone), "compressed": (dir, cfg, pruned float backbone)} from ``--model``."""
    from metalite.training.modeldir import load_model_dir, load_pruned_float, read_config

    out = {}
    for md in model_dirs or []:
        try:
            stage = read_config(md).get("stage", "float")
            if stage == "float":
                cfg, backbone, _ = load_model_dir(md)
                out.setdefault("float", (md, cfg, backbone))
            else:
                cfg, backbone, _ = load_pruned_float(md)
                out.setdefault("compressed", (md, cfg, backbone))
        except Exception as e:  # noqa: BLE001 - reported, the rest of the bench goes on
            missing.setdefault(
                "float_keras", f"--model {md}: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
            )
    return out


def find_variants(bundle, model_dirs, vdir: Path, data_spec: str, representative) -> tuple:
    """({key: Variant} in ORDER, {key: why not measured}); converted variants are written to ``vdir``.

    ``representative(n)``: n float32 training images, to quantize the float model when needed."""
    from metalite.export.tflite import convert_float, convert_int8

    m = bundle.manifest
    comp = compression_of(m)
    compressed = is_compressed(m)
    found, missing = {}, {}
    dirs = _model_dirs(model_dirs, missing)
    vdir.mkdir(parents=True, exist_ok=True)
    if compressed:
        found["int8_pruned_tflite"] = Variant(
            "int8_pruned_tflite",
            f"int8 TFLite, {describe(comp)}",
            bundle.backbone_path,
            source="bundle backbone.tflite",
        )
    else:
        found["int8_tflite"] = Variant(
            "int8_tflite",
            "int8 TFLite, not pruned",
            bundle.backbone_path,
            source="bundle backbone.tflite",
        )
    ffile = (m.get("backbone") or {}).get("float_file")
    fpath = bundle.root / ffile if ffile and (bundle.root / ffile).is_file() else None
    fq = fake_quant_ops(fpath) if fpath else 0
    if fpath and not fq:  # export --float: the bundle's own weights in float32
        if compressed:
            found["pruned_float_tflite"] = Variant(
                "pruned_float_tflite",
                f"float TFLite, {describe(comp)}",
                fpath,
                source=f"bundle {ffile} (the compressed weights in float32)",
            )
        else:
            found["float_tflite"] = Variant(
                "float_tflite", "float TFLite", fpath, source=f"bundle {ffile}"
            )
    if "float" in dirs:
        md, _, backbone = dirs["float"]
        found["float_keras"] = Variant(
            "float_keras", "float Keras", keras=backbone, source=f"model dir {md}"
        )
        if "float_tflite" not in found:
            p = vdir / "float.tflite"
            p.write_bytes(convert_float(backbone))
            found["float_tflite"] = Variant(
                "float_tflite", "float TFLite", p, source=f"converted from {md}"
            )
        if compressed:
            p = vdir / "int8.tflite"
            p.write_bytes(convert_int8(backbone, representative(200), batch=None))
            found["int8_tflite"] = Variant(
                "int8_tflite",
                "int8 TFLite, not pruned",
                p,
                source=f"post-training int8 of {md} (200 training images)",
            )
    if "compressed" in dirs and compressed and "pruned_float_tflite" not in found:
        md, cfg, backbone = dirs["compressed"]
        p = vdir / "pruned_float.tflite"
        p.write_bytes(convert_float(backbone))
        found["pruned_float_tflite"] = Variant(
            "pruned_float_tflite",
            f"float TFLite, {describe(comp)}",
            p,
            source=f"pruned stage of {md} (before quantization-aware training)",
        )
    _explain_missing(found, missing, compressed, fq, ffile)
    return {k: found[k] for k in ORDER if k in found}, {
        k: v for k, v in missing.items() if k not in found
    }


def _explain_missing(found, missing, compressed, fake_quant, ffile) -> None:
    fq = (
        f"; the bundle's {ffile} is the quantization-aware graph run in float ({fake_quant} fake-quant ops), "
        "not a float model, so it is not used"
        if fake_quant
        else ""
    )
    if "float_keras" not in found:
        missing.setdefault(
            "float_keras",
            "no float model directory: pass --model FLOAT_MODEL_DIR (needs TensorFlow)",
        )
    if "float_tflite" not in found:
        missing["float_tflite"] = "no float model directory (--model) to convert" + fq
    if "int8_tflite" not in found:
        missing["int8_tflite"] = "no float model directory (--model) to quantize without pruning"
    if "pruned_float_tflite" not in found:
        missing["pruned_float_tflite"] = (
            "bundle is not pruned"
            if not compressed
            else "no compressed model directory (--model COMPRESSED_DIR) for the pruned stage" + fq
        )
    if "int8_pruned_tflite" not in found:
        missing["int8_pruned_tflite"] = (
            "bundle is not pruned (its backbone is the int8 TFLite variant)"
        )


# ----------------------------------------------------------------------------- names in the report
VARIANT_NAMES = {
    "float_keras": "float Keras",
    "float_tflite": "float TFLite",
    "int8_tflite": "int8 TFLite, not pruned",
    "pruned_float_tflite": "pruned float TFLite",
    "int8_pruned_tflite": "int8 TFLite, pruned",
}


def shipped(report) -> str | None:
    """The variant that is the bundle's own backbone.tflite."""
    avail = get(report, "variants", "available") or {}
    for k in ("int8_pruned_tflite", "int8_tflite"):
        if k in avail and (avail[k].get("source") or "").startswith("bundle"):
            return k
    return None


def label(report, key) -> str:
    """A variant's name in the report: its label as measured, else its generic name (one not measured)."""
    return get(report, "variants", "available", key, "label") or VARIANT_NAMES.get(key, key)


def missing_lines(report) -> list:
    """The headline's line listing the variants not measured, each with why."""
    missing = get(report, "variants", "missing") or {}
    if missing:
        return [
            "- Not measured: "
            + "; ".join(f"{VARIANT_NAMES.get(k, k)} ({why})" for k, why in missing.items())
            + "."
        ]
    return []
