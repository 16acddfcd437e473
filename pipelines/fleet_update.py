"""``metalite fleet update``: turn what the devices sent into a better bundle, or say why not.

The steps live beside this module: the data (``fleet_data``), the packaging like the release
(``fleet_package``) and the gate (``fleet_gate``); this one plans, resumes, decides and publishes.

Starts from the float model of the current release (kept by ``fleet publish --model``), streams the
fleet's labelled examples (corrections and shared support sets, de-duplicated by content) next to a
replay sample of the original training data into a folder dataset, fine-tunes episodically with
``training.trainer.train`` (its checkpoints make the update resumable), packages the result like the
current release (tta, compression, widths: ``release_recipe``), and evaluates candidate against current
through the device runtime on (a) a stratified held-out slice of the fleet's examples and (b) paired
N-way 1-shot episodes on test classes of groups no device sent images of. Publishes only if the
candidate is not worse on (a) and not worse beyond the paired CI on (b).

Work directory (resumable; a rerun for the same base version and examples picks up where it stopped)::

    ROOT/updates/v<base>/  plan.json (base version, last example seq, stages done), base/ (float model),
                           current/ (bundle), data/{train,val}/<class>/*.png + fleet_holdout/<class>/*.png,
                           float/, pqat/, bundle/, release_model/ (the float model kept with the release)
    ROOT/updates/last.json the last decision with its figures (``fleet status`` shows it)
    ROOT/updates/rejected/<id>/{bundle,model,metrics.json}  the last rejected candidates (re-gate: --candidate)
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from metalite.common.files import atomic_write_text
from metalite.common.locks import file_lock
from metalite.common.progress import as_progress
from metalite.runtime.plural import plural

from .fleet_data import write_fleet_data, write_replay
from .fleet_gate import (
    UNSEEN_CLASSES,
    UNSEEN_EPISODES,
    UNSEEN_WAYS,
    decision_text,
    fleet_holdout_accuracy,
    gate,
    paired_unseen,
    unseen_classes,
)
from .fleet_package import compress_export, keep_float_model, release_recipe

KEEP_REJECTED = 3  # rejected candidates kept under updates/rejected/ (the newest)
BATCHNORM = ("keep", "adapt")  # what fine-tuning does with the model's BatchNorm statistics
RECIPE_KEYS = (
    "tta",
    "pqat",
    "sparsity",
    "distill",
    "widths",
    "prune_steps",
    "qat_steps",
    "structured_steps",
)


@dataclass(frozen=True)
class UpdateOptions:
    """How one fleet update runs (``metalite fleet update``'s options), checked when made.

    Attributes:
      model_dir: float model to start from (None: the one kept with the current release).
      candidate: a bundle to gate instead of training one (the fine-tuning steps are skipped);
        candidate_model: its float model directory (None: ``model/`` beside a kept rejected candidate).
      steps, strategy, lr_scale, queries: the fine-tuning run (``lr_scale`` times the model's learning rate;
        its compression too, on the fleet's data; ``queries`` per class and episode).
      batchnorm: "keep" the model's BatchNorm statistics while fine-tuning and compressing (a few fleet classes
        must not replace what all its training data set), or "adapt" them to the fleet's episodes (a model
        trained briefly, whose statistics are worth less).
      data: the data spec of the float model's original data on this machine (replayed classes, validation,
        the no-damage check's test classes) [its config's, which names the paths it was trained with];
        recorded, with absolute paths, in the float model a published update keeps.
      replay, val_classes: original training classes replayed / validation classes for model selection.
      recipe: overrides of the release's packaging (``release_recipe`` keys; None values keep the release's).
      ways, episodes, unseen: the paired N-way 1-shot episodes on (at most ``unseen``) classes no one trained on.
      max_drop: allowed drop (0: the candidate must not be worse on the held-out fleet examples, nor
        worse beyond the paired CI on the unseen classes). keep_rejected: rejected candidates kept.
    """

    model_dir: Path | None = None
    candidate: Path | None = None
    candidate_model: Path | None = None
    steps: int = 300
    strategy: str | None = None
    replay: int = 300
    val_classes: int = 50
    lr_scale: float = 0.03  # docs/fleet.md: what larger ones cost a well-trained model
    batchnorm: str = "keep"
    # per class and fine-tuning episode: 1 lets a fleet class of two images take part
    queries: int = 1
    data: str | None = None
    recipe: dict = field(default_factory=dict)
    ways: int = UNSEEN_WAYS
    episodes: int = UNSEEN_EPISODES
    unseen: int = UNSEEN_CLASSES
    max_drop: float = 0.0
    keep_rejected: int = KEEP_REJECTED

    def __post_init__(self):
        from metalite.fleet import FleetError

        least = {
            "steps": 1,
            "queries": 1,
            "replay": 0,
            "val_classes": 0,
            "ways": 2,
            "episodes": 10,
            "unseen": 2,
            "keep_rejected": 0,
        }
        for name, low in least.items():
            v = getattr(self, name)
            if type(v) is not int or v < low:
                raise FleetError(f"update option {name} must be an integer >= {low}, got {v!r}")
        if not (isinstance(self.lr_scale, (int, float)) and self.lr_scale > 0):
            raise FleetError(f"update option lr_scale must be a number > 0, got {self.lr_scale!r}")
        if not (isinstance(self.max_drop, (int, float)) and 0 <= self.max_drop <= 1):
            raise FleetError(
                f"update option max_drop must be a number in [0, 1], got {self.max_drop!r}"
            )
        if self.batchnorm not in BATCHNORM:
            raise FleetError(
                f"update option batchnorm must be one of {', '.join(BATCHNORM)}, got {self.batchnorm!r}"
            )
        if self.data is not None and not (isinstance(self.data, str) and self.data.strip()):
            raise FleetError(
                f"update option data must be a data spec such as 'omniglot:PATH', got {self.data!r}"
            )
        unknown = sorted(set(self.recipe) - set(RECIPE_KEYS))
        if unknown:
            raise FleetError(
                f"update option recipe: unknown keys {', '.join(unknown)} "
                f"(known: {', '.join(RECIPE_KEYS)})"
            )
        for name in ("model_dir", "candidate", "candidate_model"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))


def _fine_tune(work: Path, cfg: dict, opts: UpdateOptions, say, progress) -> None:
    """Fine-tune the base model on the update's data (resumes its checkpoints when the update is run again)."""
    from metalite.training.datasets import load_data
    from metalite.training.settings import TrainSettings
    from metalite.training.trainer import train

    data = load_data(f"folder:{work / 'data'}", int(cfg["input"]["shape"][0]), "train")
    tr = cfg.get("train", {})
    shots = int(tr.get("shots") or 1)
    usable = int((data.counts() >= shots + opts.queries).sum())
    hparams = dict(tr.get("hparams") or {})
    if "lr" in hparams:
        hparams["lr"] = float(hparams["lr"]) * opts.lr_scale
    settings = TrainSettings(
        data=f"folder:{work / 'data'}",
        algorithm=cfg["algorithm"],
        backbone=cfg["backbone"],
        head=cfg["head"],
        image_size=int(cfg["input"]["shape"][0]),
        shots=shots,
        queries=opts.queries,
        ways=max(2, min(int(tr.get("ways") or 20), usable)),
        steps=opts.steps,
        seed=int(cfg.get("seed", 0)),
        rotations=False,
        within_alphabet=0.0,
        augment=tr.get("augment") or {},
        hparams=hparams,
        val_every=opts.steps,
        val_episodes=100,
        checkpoint_every=max(1, opts.steps // 4),
        strategy=opts.strategy or TrainSettings.strategy,
        init=str(work / "base"),
        freeze_bn=opts.batchnorm == "keep",
    )
    resume = (work / "float" / "checkpoints" / "run.json").is_file()
    # images per fleet class (replayed classes are orig-NNNNN)
    fleet = [n for c, n in zip(data.class_names, data.counts()) if c.startswith("fleet-")]
    fit = sum(n >= shots + opts.queries for n in fleet)
    say(
        ("resuming" if resume else "starting")
        + f" fine-tuning: {plural(opts.steps, 'step')} on {plural(data.num_classes, 'class')} ({fit} of the fleet's "
        f"{len(fleet)} have the {shots + opts.queries} training images an episode needs)"
    )
    train(work / "float", settings, resume=resume, progress=progress, log=say)


def _plan(root, work: Path, base: int) -> dict:
    """The update's plan (kept in ``plan.json`` so a rerun continues it): base version, examples up to ``last_seq``."""
    p = work / "plan.json"
    if p.is_file():
        plan = json.loads(p.read_text())
        if plan.get("base") == base:
            return plan
        shutil.rmtree(work)
    from metalite.fleet.examples import newest_seq

    work.mkdir(parents=True, exist_ok=True)
    plan = {"base": base, "last_seq": newest_seq(root), "done": []}
    _save_plan(work, plan)
    return plan


def _save_plan(work: Path, plan: dict) -> None:
    atomic_write_text(work / "plan.json", json.dumps(plan, indent=1))


def _prepare(root, work: Path, plan: dict, opts: UpdateOptions, say) -> dict:
    """Base model, current bundle and data (each step once, recorded in the plan); ``opts.data`` replaces the
    base's data spec (where this machine has the model's original data)."""
    from metalite.fleet import export_bundle, export_model
    from metalite.training.datasets import absolute_spec, parse_spec
    from metalite.training.errors import DataError
    from metalite.training.modeldir import read_config

    if "base" not in plan["done"]:
        shutil.rmtree(work / "base", ignore_errors=True)
        shutil.rmtree(work / "current", ignore_errors=True)
        export_bundle(root, plan["base"], work / "current")
        if opts.model_dir is not None:
            shutil.copytree(
                opts.model_dir, work / "base", ignore=shutil.ignore_patterns("checkpoints")
            )
        else:
            export_model(root, plan["base"], work / "base")
        plan["done"].append("base")
        _save_plan(work, plan)
    cfg = read_config(work / "base")
    if cfg.get("stage", "float") != "float":
        raise ValueError(
            f"{work / 'base'}: the update starts from a float model, this one is {cfg['stage']!r}"
        )
    if opts.data is not None:  # a model's config names its data as the training machine had it
        cfg["data"] = absolute_spec(opts.data)
    else:
        try:
            parse_spec(cfg["data"])
        except DataError as e:
            raise DataError(
                f"the float model's data: {e} (--data: where this machine has it)"
            ) from None
    if "data" not in plan["done"]:
        shutil.rmtree(work / "data", ignore_errors=True)
        size = int(cfg["input"]["shape"][0])
        say(
            f"streaming the fleet's labelled examples (up to #{plan['last_seq']}), de-duplicated by content"
        )
        plan["examples"] = write_fleet_data(root, work / "data", plan["last_seq"], size)
        if plan["examples"]["train"] == 0 or plan["examples"]["holdout"] == 0:
            raise ValueError(
                f"too few labelled examples from the fleet to update and evaluate ({plan['examples']})"
            )
        say(f"replaying {opts.replay} original training classes from {cfg['data']}")
        plan["replay"] = write_replay(
            cfg["data"], size, work / "data", opts.replay, opts.val_classes, int(cfg.get("seed", 0))
        )
        plan["done"].append("data")
        _save_plan(work, plan)
    return cfg


def _evaluate(work: Path, plan: dict, candidate: Path, cfg: dict, opts: UpdateOptions, say) -> dict:
    """The gate's figures: held-out fleet examples and paired episodes on unseen classes, current vs candidate."""
    ways, episodes = opts.ways, opts.episodes
    current = work / "current"
    size = int(cfg["input"]["shape"][0])
    m = {
        "base": plan["base"],
        "last_seq": plan["last_seq"],
        "examples": plan.get("examples"),
        "replay": plan.get("replay"),
    }
    say("evaluating current and candidate on the held-out fleet examples")
    fa = [fleet_holdout_accuracy(b, work / "data") for b in (current, candidate)]
    m["fleet_holdout"] = {
        "current": fa[0][0],
        "candidate": fa[1][0],
        "images": fa[1][1],
        "classes": fa[1][2],
    }
    pixels = set(json.loads((work / "data" / "pixels.json").read_text()))
    data, touched = unseen_classes(cfg["data"], size, pixels, opts.unseen)
    say(
        f"evaluating on {data.num_classes} classes no one trained on ({cfg['data']} test split without the "
        f"{len(touched)} groups the fleet sent images of): {episodes} paired {min(ways, data.num_classes)}-way "
        f"1-shot episodes"
    )
    m["unseen"] = {
        **paired_unseen([current, candidate], data, ways, episodes),
        "data": f"{cfg['data']} test",
        "groups_left_out": touched,
    }
    return m


def _exclusive(updates: Path):
    """Hold ``updates/.lock``: a scheduled and a manual update of one fleet never share a work directory."""
    from metalite.fleet import FleetError

    updates.mkdir(parents=True, exist_ok=True)
    return file_lock(
        updates / ".lock",
        blocking=False,
        busy=FleetError(f"another fleet update of {updates.parent} is running"),
    )


def update(root, options: UpdateOptions | None = None, say=print, progress=None) -> dict:
    """Fine-tune, package like the current release, gate and maybe publish; returns the decision with its figures.

    Args:
      root: a ``FleetRoot``. options: an ``UpdateOptions`` (None: the defaults).
      say: where the news lines go. progress: a ``metalite.common.progress.Progress`` for the training,
        compression and export steps (None: silent).
    Returns:
      {"decision": "published" | "kept", "reason", "version", "fleet_holdout", "unseen", "seconds", ...}.
    """
    from metalite.common.errors import one_line
    from metalite.fleet import FleetError, latest_offer

    t0 = time.time()
    opts = options or UpdateOptions()
    offer = latest_offer(root)
    if offer is None:
        raise FleetError("nothing to update: no release published yet")
    candidate_model, model_dir = opts.candidate_model, opts.model_dir
    kept = opts.candidate.resolve().parent if opts.candidate is not None else None
    if (
        kept is not None
        and candidate_model is None
        and kept.parent == (root.path / "updates" / "rejected").resolve()
        and (kept / "model").is_dir()
    ):
        candidate_model = (
            kept / "model"
        )  # a kept rejected candidate: updates/rejected/<id>/{bundle,model}
    if opts.candidate is not None and model_dir is None and candidate_model is not None:
        model_dir = (
            candidate_model  # its data and input size; the current release may keep no float model
        )
    opts = replace(opts, model_dir=model_dir, candidate_model=candidate_model)
    try:
        with _exclusive(root.path / "updates"):
            return _run(root, offer["version"], opts, say, as_progress(progress), t0)
    except FleetError:
        raise
    except (
        ValueError
    ) as e:  # the training side's one-line errors (data, model directory, compression, export)
        raise FleetError(f"update failed: {one_line(e)}") from None


def _keep_rejected(
    updates: Path, base: int, bundle: Path, model: Path | None, m: dict, keep: int
) -> Path | None:
    """Move a rejected candidate (bundle, float model, figures) to ``updates/rejected/v<base>-<time>/``; keep the
    newest ``keep``."""
    if keep <= 0:
        return None
    rej = updates / "rejected"
    dest = rej / f"v{base}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{m['last_seq']}"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bundle, dest / "bundle", dirs_exist_ok=True)
    if model is not None:
        shutil.copytree(
            model, dest / "model", dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints")
        )
    atomic_write_text(dest / "metrics.json", json.dumps(m, indent=1))
    for old in sorted((p for p in rej.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)[
        :-keep
    ]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _run(root, base: int, opts: UpdateOptions, say, progress, t0: float) -> dict:
    """The update of release ``base`` under the update lock: plan, data, candidate, gate, decision."""
    from metalite.fleet import publish
    from metalite.runtime.bundle import open_bundle

    updates = root.path / "updates"
    work = updates / f"v{base}"
    plan = _plan(root, work, base)
    cfg = _prepare(root, work, plan, opts, say)
    recipe = release_recipe(open_bundle(work / "current").manifest, opts.recipe)
    candidate, float_model = opts.candidate, opts.candidate_model
    if candidate is None:
        if "train" not in plan["done"]:
            _fine_tune(work, cfg, opts, say, progress)
            plan["done"].append("train")
            _save_plan(work, plan)
        candidate = compress_export(
            work, cfg, recipe, say, progress, opts.lr_scale, opts.batchnorm == "keep"
        )
        float_model = keep_float_model(work, cfg, recipe, plan, work / "release_model")
    m = _evaluate(work, plan, Path(candidate), cfg, opts, say)
    m["recipe"] = recipe
    m["float_model"] = (
        "kept with the release"
        if float_model is not None
        else "none (gated with --candidate and no --candidate-model): the next update cannot start from this version"
    )
    reason = gate(m, opts.max_drop)
    m["seconds"] = round(time.time() - t0, 1)
    m["figures"] = decision_text(m, opts.max_drop)
    if reason is None:
        r = publish(
            root, candidate, model_dir=float_model, note=f"fleet update of v{base}", metrics=m
        )
        m.update(
            decision="published",
            version=r["version"],
            reason="within the thresholds on both measures",
        )
    else:
        m.update(decision="kept", version=base, reason=reason)
        kept = _keep_rejected(updates, base, Path(candidate), float_model, m, opts.keep_rejected)
        m["rejected"] = None if kept is None else str(kept / "bundle")
    shutil.rmtree(
        work, ignore_errors=True
    )  # decided: the next update starts afresh with the examples then
    updates.mkdir(exist_ok=True)
    atomic_write_text(updates / "last.json", json.dumps(m, indent=1))
    return m
