"""The model directory (docs/DESIGN.md): config.json + backbone.weights.h5 + head.npz.

``save_model_dir`` writes it atomically (temp dir + rename); ``load_model_dir`` rebuilds the
backbone from the config and returns (config, backbone, head_spec), with one-line errors.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from metalite.runtime.head import HeadSpec, load_head, save_head

MODEL_FORMAT = "metalite-model"
MODEL_FORMAT_VERSION = 1


class ModelDirError(ValueError):
    """Not a metalite model directory, or a damaged one."""


def versions() -> dict:
    import platform

    from .tfcompat import tf

    out = {"python": platform.python_version(), "numpy": np.__version__, "tensorflow": tf.__version__}
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


def save_model_dir(out: Path, config: dict, backbone, head_spec: HeadSpec, extra_files=None) -> Path:
    """Write config.json, backbone.weights.h5 and head.npz into ``out`` (replacing it at the end).

    ``extra_files``: {name: source path} copied in too (e.g. a report). Checkpoints already in ``out``
    are kept.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        cfg = {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, **config}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=float))
        backbone.save_weights(str(tmp / "backbone.weights.h5"))
        with open(tmp / "head.npz", "wb") as f:
            save_head(head_spec, f)
        for name, src in (extra_files or {}).items():
            shutil.copy(src, tmp / name)
        if (out / "checkpoints").is_dir():
            shutil.move(str(out / "checkpoints"), str(tmp / "checkpoints"))
        if out.exists():
            old = out.with_name(f".{out.name}.old{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


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
        raise ModelDirError(f"{cfg_file}: not a metalite model config (format={cfg.get('format')!r})")
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
    """(config, backbone keras Model with weights, HeadSpec). Compressed stages are rebuilt by
    ``metalite.training.compress.load_compressed`` when config["stage"] is not "float"."""
    path = Path(path)
    cfg = read_config(path)
    if cfg.get("stage", "float") != "float":
        from . import compress

        return compress.load_compressed(path, cfg)
    backbone, _ = build_from_config(cfg)
    load_weights(backbone, path / "backbone.weights.h5")
    return cfg, backbone, load_head_checked(path)


def load_weights(model, path: Path) -> None:
    """Load keras weights from ``path``; ModelDirError naming the file if missing or unloadable."""
    if not path.exists():
        raise ModelDirError(f"{path}: missing")
    try:
        model.load_weights(str(path))
    except Exception as e:
        raise ModelDirError(f"{path}: cannot load weights ({type(e).__name__}: {str(e)[:120]})") from None


def load_head_checked(path: Path) -> HeadSpec:
    """head.npz of model directory ``path``; ModelDirError naming the file if damaged."""
    try:
        return load_head(path / "head.npz")
    except (ValueError, OSError) as e:
        raise ModelDirError(f"{path / 'head.npz'}: {e}") from None
