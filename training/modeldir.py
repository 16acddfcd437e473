"""The model directory (docs/DESIGN.md): config.json + backbone.weights.h5 + head.npz.

``save_model_dir`` writes it atomically (temp dir + rename); ``load_model_dir`` rebuilds the
backbone from the config and returns (config, backbone, head_spec), with one-line errors, for every
stage: "float" (from ``train``), "pruned" and "pqat" (from ``compress``). ``meta_from_config`` is what a
bundle's manifest records of the directory it was exported from.

A compressed directory also holds ``backbone_pruned.weights.h5``: the pruned float backbone (exact
zeros). For "pqat", ``backbone.weights.h5`` holds the weights of the ``quantize_apply``'d model, which
is rebuilt deterministically: float backbone from the config, pruned weights (PQAT derives its sparsity
masks from their exact zeros when ``quantize_apply`` builds the model), ``quantize_pqat``, QAT weights.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from metalite.common.files import atomic_write, atomic_write_text, replace_dir
from metalite.runtime.head import HeadSpec, load_head, save_head

from .errors import ModelDirError

MODEL_FORMAT = "metalite-model"
MODEL_FORMAT_VERSION = 1
PRUNED_WEIGHTS = "backbone_pruned.weights.h5"
STAGES = ("float", "pruned", "pqat")


def versions() -> dict:
    import platform

    from metalite.export.tfcompat import tf

    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
    }
    try:
        from importlib.metadata import version

        out["tf_keras"] = version("tf-keras")
        out["tensorflow_model_optimization"] = version("tensorflow-model-optimization")
        out["metalite"] = version("metalite")
    except Exception:
        pass
    return out


def head_spec_from_keras(head, activation: str, adaptation: dict) -> HeadSpec:
    """HeadSpec (numpy) of a keras head Sequential."""
    weights = [(l.kernel.numpy(), l.bias.numpy()) for l in head.layers]
    return HeadSpec(weights, [activation] * len(weights), dict(adaptation))


def save_model_dir(
    out: Path, config: dict, backbone, head_spec: HeadSpec, extra_files=None
) -> Path:
    """Write config.json, backbone.weights.h5 and head.npz into ``out`` (replacing it at the end).

    ``extra_files``: {name: source path} copied in too (e.g. a report). Checkpoints already in ``out``
    are kept.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        cfg = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, **config}
        atomic_write_text(tmp / "config.json", json.dumps(cfg, indent=2, default=float))
        backbone.save_weights(str(tmp / "backbone.weights.h5"))
        atomic_write(tmp / "head.npz", lambda f: save_head(head_spec, f))
        for name, src in (extra_files or {}).items():
            shutil.copy(src, tmp / name)
        if (out / "checkpoints").is_dir():
            shutil.move(str(out / "checkpoints"), str(tmp / "checkpoints"))
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def meta_from_config(cfg: dict) -> dict:
    """Manifest training/compression/accuracy sections from a model directory's config.json."""
    from metalite.training.datasets import describe_split, portable_spec

    training = {
        "algorithm": cfg.get("algorithm"),
        "data": portable_spec(cfg.get("data")),
        **cfg.get("train", {}),
        "backbone": cfg.get("backbone"),
        "seed": cfg.get("seed"),
    }
    compression = {
        "stage": cfg.get("stage", "float"),
        "pqat": cfg.get("stage") == "pqat",
        **cfg.get("compression", {}),
    }
    accuracy = {}
    val = (cfg.get("metrics") or {}).get("val")
    if isinstance(val, dict) and "mean" in val:
        key = f"{val.get('ways', '?')}way{val.get('shots', '?')}shot"
        accuracy[key] = {
            **val,
            "data": describe_split(cfg.get("data"), "val"),
            "measured": "Keras model during training",
        }
    for k, v in (cfg.get("metrics") or {}).items():
        if k not in ("val", "step", "history") and isinstance(v, dict) and "mean" in v:
            accuracy[k] = v
    return {"training": training, "compression": compression, "accuracy": accuracy}


def read_config(path) -> dict:
    """config.json of a model directory, checked; ModelDirError otherwise."""
    path = Path(path)
    if not path.exists():
        raise ModelDirError(f"{path}: no such model directory")
    cfg_file = path / "config.json"
    if not path.is_dir() or not cfg_file.exists():
        raise ModelDirError(f"{path}: not a metalite model directory (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{cfg_file}: corrupt JSON ({e})") from None
    if cfg.get("format") != MODEL_FORMAT:
        raise ModelDirError(
            f"{cfg_file}: not a metalite model config (format={cfg.get('format')!r})"
        )
    if cfg.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelDirError(f"{cfg_file}: unsupported format_version {cfg.get('format_version')!r}")
    return cfg


def build_from_config(cfg: dict):
    """Fresh (untrained) backbone and keras head for a config."""
    from .models import build_backbone, build_head

    backbone = build_backbone(cfg["backbone"], tuple(cfg["input"]["shape"]))
    head = build_head(cfg["head"], int(backbone.output_shape[-1]))
    return backbone, head


def load_model_dir(path):
    """(config, backbone keras Model with weights, HeadSpec) of a model directory of any stage; for "pqat"
    the backbone is the ``quantize_apply``'d model that ``metalite export`` converts to int8."""
    path = Path(path)
    cfg = read_config(path)
    stage = cfg.get("stage", "float")
    if stage not in STAGES:
        raise ModelDirError(
            f"{path / 'config.json'}: unknown stage {stage!r} (expected float, pruned or pqat)"
        )
    backbone, _ = build_from_config(cfg)
    load_weights(backbone, path / ("backbone.weights.h5" if stage == "float" else PRUNED_WEIGHTS))
    if stage == "pqat":
        from .pruning import quantize_pqat

        backbone = quantize_pqat(backbone)
        load_weights(backbone, path / "backbone.weights.h5")
    return cfg, backbone, load_head_checked(path)


def load_pruned_float(path):
    """(config, pruned float backbone with exact zeros, HeadSpec) of a compressed model directory."""
    path = Path(path)
    cfg = read_config(path)
    if cfg.get("stage", "float") == "float":
        raise ModelDirError(f"{path}: not a compressed model (stage 'float')")
    backbone, _ = build_from_config(cfg)
    load_weights(backbone, path / PRUNED_WEIGHTS)
    return cfg, backbone, load_head_checked(path)


def float_backbone(cfg: dict, backbone):
    """A plain float backbone with the final weights of ``backbone`` (as ``load_model_dir`` returned it):
    ``backbone`` itself for "float" and "pruned", for "pqat" the PQAT weights without fake quantization
    (``pruning.float_twin``)."""
    if cfg.get("stage", "float") != "pqat":
        return backbone
    from .pruning import float_twin

    return float_twin(backbone, build_from_config(cfg)[0])


def load_weights(model, path: Path) -> None:
    """Load keras weights from ``path``; ModelDirError naming the file if missing or unloadable."""
    if not path.exists():
        raise ModelDirError(f"{path}: missing")
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise ModelDirError(
            f"{path}: cannot load weights ({type(e).__name__}: {str(e)[:120]})"
        ) from None


def load_head_checked(path: Path) -> HeadSpec:
    """head.npz of model directory ``path``; ModelDirError naming the file if damaged."""
    try:
        return load_head(path / "head.npz")
    except (ValueError, OSError) as e:
        raise ModelDirError(f"{path / 'head.npz'}: {e}") from None
