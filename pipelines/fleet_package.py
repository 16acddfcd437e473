"""Packaging a fleet update's candidate like the release it would replace: the same shift averaging,
compression stage, sparsity, distillation, widths and compression steps (read from the release's manifest),
and the fine-tuned float model kept self-contained beside it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def release_recipe(manifest: dict, overrides: dict | None = None) -> dict:
    """How a release was packaged (from its manifest): shift averaging, compression stage, sparsity,
    distillation, widths and compression steps; ``overrides`` (non-None values) replace any of them."""
    comp, train = manifest.get("compression") or {}, manifest.get("training") or {}
    ad = (manifest.get("head") or {}).get("adaptation") or {}
    steps = comp.get("steps") or {}
    r = {
        "tta": int(ad.get("tta") or 0),
        "pqat": bool(comp.get("pqat")),
        "sparsity": float(comp.get("sparsity") or 0),
        "distill": comp.get("distill") or None,
        "widths": (train.get("backbone") or {}).get("widths"),
        "prune_steps": int(steps.get("prune") or 0),
        "qat_steps": int(steps.get("qat") or 0),
        "structured_steps": int(steps.get("structured") or 0),
    }
    r.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return r


def _thinning(base_backbone: dict, widths) -> list | None:
    """Per-layer fractions of filters removed to reach the release's ``widths`` (None: no thinning needed)."""
    from metalite.training.models import conv_widths

    if not widths:
        return None
    before = conv_widths(base_backbone)
    if list(before) == list(widths):
        return None
    if len(before) != len(widths) or before[-1] != widths[-1]:
        raise ValueError(f"the release's widths {widths} do not fit the float model's {before}")
    return [(b - w) / b for b, w in zip(before[:-1], widths[:-1])]


def compress_export(
    work: Path,
    cfg: dict,
    recipe: dict,
    say,
    progress,
    lr_scale: float = 1.0,
    freeze_bn: bool = True,
) -> Path:
    """The fine-tuned float model packaged like the release (``recipe``): compressed the same way (on the fleet's
    data, so at ``lr_scale`` of the model's learning rate, its BatchNorm kept if ``freeze_bn``), then exported."""
    from metalite.export.bundle import write_bundle
    from metalite.training.compress import compress
    from metalite.training.datasets import load_data, representative_inputs
    from metalite.training.modeldir import load_model_dir, meta_from_config
    from metalite.training.settings import hparams_of

    thin = _thinning(cfg["backbone"], recipe["widths"])
    lr = lr_scale * float(
        hparams_of(cfg["algorithm"], (cfg.get("train") or {}).get("hparams") or {})["lr"]
    )
    if recipe["pqat"] or recipe["sparsity"] > 0 or thin:
        if (work / "pqat").exists() and not (work / "pqat" / "config.json").is_file():
            shutil.rmtree(work / "pqat")
        if not (work / "pqat" / "config.json").is_file():
            say(
                f"compressing like the release: sparsity {recipe['sparsity']:g}, PQAT {recipe['pqat']}, "
                f"prune {recipe['prune_steps']} + QAT {recipe['qat_steps']} steps"
                + (f", thinned to widths {recipe['widths']}" if thin else "")
            )
            compress(
                work / "float",
                work / "pqat",
                sparsity=recipe["sparsity"],
                prune_steps=max(1, recipe["prune_steps"]),
                qat_steps=recipe["qat_steps"],
                qat=recipe["pqat"],
                distill=bool(recipe["distill"]),
                distill_loss=recipe["distill"] or "mse",
                episodes=50,
                eval_ways=(5,),
                int8_check=False,
                progress=progress,
                log=say,
                structured=thin or 0.0,
                structured_steps=recipe["structured_steps"] if thin else None,
                structured_multiple=1,
                freeze_bn=freeze_bn,
                lr=lr,
            )
        source = work / "pqat"
    else:
        source = work / "float"
    mcfg, backbone, head_spec = load_model_dir(source)
    if thin and mcfg["backbone"].get("widths") != list(recipe["widths"]):
        raise ValueError(
            f"thinning gave widths {mcfg['backbone'].get('widths')}, the release has {recipe['widths']}"
        )
    head_spec.adaptation["tta"] = int(recipe["tta"])
    reps = representative_inputs(
        load_data(mcfg["data"], int(mcfg["input"]["shape"][0]), "train"), 200
    )
    return write_bundle(
        work / "bundle",
        backbone,
        head_spec,
        reps,
        meta_from_config(mcfg),
        progress=progress,
        overwrite=True,
    )


def keep_float_model(work: Path, cfg: dict, recipe: dict, plan: dict, dest: Path) -> Path:
    """A self-contained copy of the fine-tuned float model at ``dest``: its ``data`` is the base's replay
    source (not this update's folder, which is deleted), it carries the release's tta, and says where it came from."""
    from metalite.common.files import atomic_write_text

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(work / "float", dest, ignore=shutil.ignore_patterns("checkpoints"))
    mcfg = json.loads((dest / "config.json").read_text())
    mcfg["data"] = cfg["data"]
    mcfg["adaptation"] = {**(mcfg.get("adaptation") or {}), "tta": int(recipe["tta"])}
    mcfg["fleet_update"] = {
        "base": plan["base"],
        "last_seq": plan["last_seq"],
        "examples": plan.get("examples"),
        "recipe": recipe,
    }
    atomic_write_text(dest / "config.json", json.dumps(mcfg, indent=1))
    return dest
