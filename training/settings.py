"""The settings of a meta-training run (``trainer.train(out, settings)``), merged and checked before TensorFlow loads.

``DEFAULTS`` names every key. ``resolve(out, settings, resume)`` merges them: a resumed run keeps the
settings saved in ``out/checkpoints/run.json`` (``steps`` may only grow, ``strategy`` may change). ``ways``
left unset is decided once the training data is loaded (``default_ways``).
``check(settings)`` raises a one-line error for a bad data spec, algorithm, strategy or augmentation
without loading any data, so ``metalite train --data nope.zip`` fails at once.
"""
from __future__ import annotations

import json
from pathlib import Path

from metalite.common.files import replace_refusal

from .augment import DEFAULT as DEFAULT_AUGMENT
from .augment import Augment
from .datakind import survey
from .datasets import parse_spec
from .errors import DataError, ModelDirError, SettingsError, StrategyError

ALGORITHMS = ("protonet", "anil", "fomaml", "reptile")
DEFAULT_HPARAMS = {
    "protonet": {"lr": 1e-3, "scale": 1.0, "inner_steps": 0, "inner_lr": 0.1},
    "anil": {"lr": 1e-3, "scale": 1.0, "inner_steps": 5, "inner_lr": 0.1, "first_order": False},
    "fomaml": {"lr": 1e-3, "scale": 1.0, "inner_steps": 5, "inner_lr": 0.01},
    "reptile": {"lr": 1.0, "scale": 1.0, "inner_steps": 5, "inner_lr": 1e-3, "inner_batch": 0},
}
STRATEGIES = ("default", "mirrored", "multiworker")
SUPPORTED_ALGORITHMS = ("protonet", "anil")  # of a distributed strategy (docs/distributed.md)
# The measured recipe (docs/accuracy.md): 60-way episodes (or as many classes as the data has), rotations as
# new classes on Omniglot (None = on for omniglot: data), half the episodes within one alphabet, augmentation.
MAX_DEFAULT_WAYS = 60
# Validation is 20-way (or as many classes as the val split holds): 5-way 1-shot sits at ~98% on Omniglot
# from the first thousand episodes, so the model kept as "best" was chosen by noise.
DEFAULTS = {
    "data": "glyphs", "algorithm": "protonet", "backbone": {"kind": "conv4", "filters": 64, "embedding_dim": 64},
    "head": {"hidden": [64], "activation": "linear"}, "image_size": 28, "ways": None, "shots": 1, "queries": 5,
    "steps": 12000, "seed": 0, "rotations": None, "within_alphabet": 0.5, "augment": DEFAULT_AUGMENT, "hparams": {},
    "val_every": 1000, "val_episodes": 200, "val_ways": 20, "val_shots": 1, "checkpoint_every": 1000,
    "strategy": "default", "channels": None,  # input channels: None = as the data has them (1 gray, 3 RGB)
    "split_seed": 0,  # which classes (alphabets) are held out: another seed is another fold of the same data
    "init": None,  # a float model directory whose weights a fine-tuning run starts from (``metalite fleet update``)
}
RUN_FILE = "run.json"  # in out/checkpoints: the settings of the run, for --resume


def check_supported(strategy: str, algorithm: str) -> None:
    """Raise StrategyError unless ``algorithm`` can be trained under ``strategy``."""
    if strategy not in STRATEGIES:
        raise StrategyError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if strategy != "default" and algorithm not in SUPPORTED_ALGORITHMS:
        raise StrategyError(f"--strategy {strategy} supports {' and '.join(SUPPORTED_ALGORITHMS)} only: {algorithm} "
                            f"runs an eager inner loop that moves the shared weights; use --strategy default")


def hparams_of(s: dict) -> dict:
    """The algorithm's default hyper-parameters updated with the run's own."""
    return {**DEFAULT_HPARAMS[s["algorithm"]], **(s.get("hparams") or {})}


def resolve(out, settings: dict, resume: bool = False) -> dict:
    """DEFAULTS updated with ``settings`` (None values ignored), or with the saved run for ``resume``."""
    if resume:
        run_file = Path(out) / "checkpoints" / RUN_FILE
        if not run_file.exists():
            raise ModelDirError(f"{out}: nothing to resume (no checkpoints/{RUN_FILE})")
        try:
            saved = json.loads(run_file.read_text())
        except ValueError as e:
            raise ModelDirError(f"{run_file}: corrupt JSON ({e})") from None
        settings = {**saved, "steps": max(settings.get("steps") or 0, saved["steps"]),
                    **({"strategy": settings["strategy"]} if settings.get("strategy") else {})}
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    if not resume and settings.get("augment") is None:
        s["augment"] = default_augment(s["data"])
    s["within_alphabet"] = float(s["within_alphabet"])  # older runs stored a bool
    if s["rotations"] is None:
        s["rotations"] = parse_spec(s["data"])[0] == "omniglot"
    return s


def default_augment(spec: str) -> dict:
    """The augmentation that fits the data: the measured default for drawings (glyphs, Omniglot, a folder of ink
    on paper), none for a folder of photos (``datakind``)."""
    kind, paths = parse_spec(spec)
    found = survey(paths[0]) if kind == "folder" else None
    return found.augment() if found is not None else dict(DEFAULT_AUGMENT)


def default_ways(s: dict, train_data) -> int:
    """``s["ways"]``, or when unset as many training classes as can fill an episode, at most MAX_DEFAULT_WAYS."""
    if s["ways"] is not None:
        return int(s["ways"])
    return max(2, min(MAX_DEFAULT_WAYS, int((train_data.counts() >= s["shots"] + s["queries"]).sum())))


def check(s: dict) -> dict:
    """Raise a one-line error (DataError, SettingsError, StrategyError) for settings that cannot run; return ``s``."""
    parse_spec(s["data"])
    if s["algorithm"] not in ALGORITHMS:
        raise SettingsError(f"unknown algorithm {s['algorithm']!r}; choose one of {', '.join(ALGORITHMS)}")
    check_supported(s["strategy"], s["algorithm"])
    try:
        Augment(**s["augment"])
    except (TypeError, ValueError) as e:
        raise DataError(f"augmentation {s['augment']}: {e}") from None
    if s.get("channels") not in (None, 1, 3):
        raise SettingsError(f"--channels must be 1 (gray) or 3 (RGB), got {s['channels']}")
    for key in ("steps", "val_every", "checkpoint_every", "val_episodes", "image_size"):
        if int(s[key]) < 1:
            raise SettingsError(f"--{key.replace('_', '-')} must be at least 1, got {s[key]}")
    return s


def check_out(out, resume: bool = False, overwrite: bool = True) -> None:
    """Refuse an ``--out`` that is a file, a directory metalite did not write, or (unless ``overwrite``, the CLI's
    ``--force``) an existing model directory; a resumed run continues its own directory."""
    if resume:
        if Path(out).exists() and not Path(out).is_dir():
            raise ModelDirError(f"{out}: exists and is not a directory")
        return
    refusal = replace_refusal(out, overwrite, "config.json", "model directory")
    if refusal:
        raise ModelDirError(refusal + ("" if overwrite or "--force" not in refusal else " (or --resume to continue it)"))
