"""The ``size`` section of ``metalite bench``: bytes (raw and gzip -9), parameters, stored sparsity and MACs."""
from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

from .cost import keras_macs, tflite_macs


def _gz(raw: bytes) -> int:
    return len(gzip.compress(raw, 9, mtime=0))


def tflite_size(path) -> dict:
    from metalite.export.inspect import weight_stats

    raw = Path(path).read_bytes()
    ws = weight_stats(raw, Path(path).name)
    return {"bytes": len(raw), "gzip_bytes": _gz(raw), "parameters": int(ws["weights"]),
            "sparsity": float(ws["sparsity"]), "macs": tflite_macs(raw, Path(path).name),
            "what": f"{Path(path).name} (conv/dense weights counted as parameters)"}


def keras_size(model) -> dict:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "backbone.weights.h5"
        model.save_weights(str(p))
        raw = p.read_bytes()
    kern = [w.numpy() for w in model.weights if len(w.shape) >= 2]
    zeros, total = sum(int((w == 0).sum()) for w in kern), sum(w.size for w in kern)
    return {"bytes": len(raw), "gzip_bytes": _gz(raw), "parameters": int(model.count_params()),
            "sparsity": zeros / total if total else 0.0, "macs": keras_macs(model),
            "what": "tf_keras backbone.weights.h5 (all parameters incl. BatchNorm)"}


def size_section(variants, bundle) -> dict:
    out = {key: (tflite_size(v.path) if v.path is not None else keras_size(v.keras)) for key, v in variants.items()}
    head = Path(bundle.head_path).read_bytes()
    out["head.npz"] = {"bytes": len(head), "gzip_bytes": _gz(head)}
    return out
