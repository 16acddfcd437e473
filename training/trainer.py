"""Episodic meta-training with validation, checkpoints, ``--resume`` and a clean Ctrl-C.

``train(out, settings)`` (a ``settings.TrainSettings``, or a dict of its fields) runs ``loop.run_episodes``
with a ``TrainingRun`` as its hooks. The run writes the model directory ``out`` whenever validation accuracy
improves (so it is usable at any moment) and a checkpoint every ``checkpoint_every`` steps under ``out/checkpoints``
(weights, optimizer, step, best validation and the episode sampler's RNG state, ``sampler-STEP.json``).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from metalite.common.files import atomic_write_text
from metalite.common.progress import as_progress
from metalite.export.tfcompat import tf
from metalite.runtime.plural import plural
from metalite.runtime.preprocess import settings as preprocess_settings

from . import settings as run_settings
from .algorithms import make_learner
from .augment import Augment
from .datasets import load_data
from .distribute import (
    DistributedLearner,
    cleanup,
    describe,
    make_strategy,
    weights_digest,
    worker_info,
    write_root,
)
from .episodes import EpisodeSampler, check_episode_fits
from .errors import Interrupted, ModelDirError
from .evaluate import embed_all, episode_settings, evaluate_embeddings, keras_embed_fn
from .loop import Averages, Hooks, run_episodes
from .modeldir import build_from_config, head_spec_from_keras, read_config, save_model_dir, versions
from .models import freeze_batchnorm

VAL_SEED = 1234  # the same validation episodes at every validation


def _channels(s: run_settings.TrainSettings) -> int:
    """Input channels of the run: 1 (gray) or 3 (RGB), as the training data has them unless set."""
    return int(s.channels or 1)


def model_config(s: run_settings.TrainSettings, hparams: dict, adaptation: dict) -> dict:
    """config.json content for settings ``s`` (everything later steps need, so no flag is repeated)."""
    return {
        "algorithm": s.algorithm,
        "data": s.data,
        "backbone": s.backbone,
        "head": s.head,
        "input": {
            "shape": [s.image_size, s.image_size, _channels(s)],
            "preprocess": preprocess_settings(_channels(s)),
        },
        "adaptation": adaptation,
        "seed": s.seed,
        "stage": "float",
        "train": {
            k: s.to_json()[k]
            for k in (
                "ways",
                "shots",
                "queries",
                "steps",
                "rotations",
                "within_alphabet",
                "augment",
                "split_seed",
            )
        }
        | {"hparams": hparams}
        | _warm_start(s),
        "versions": versions(),
    }


def _warm_start(s: run_settings.TrainSettings) -> dict:
    """{"warm_start": {"model", "episodes"}} of a run that started from another model's weights, else {}.

    ``episodes`` counts every episode behind the starting weights (their own warm starts included), so a
    config says how much training its model had in all."""
    if not s.init:
        return {}
    train = read_config(Path(s.init)).get("train") or {}
    before = int(train.get("steps") or 0) + int(
        (train.get("warm_start") or {}).get("episodes") or 0
    )
    return {"warm_start": {"model": Path(s.init).name, "episodes": before}}


class TrainingRun(Hooks):
    """One run: strategy, data, model, checkpoints; as the loop's hooks it validates, saves and checkpoints."""

    def __init__(self, out, s: run_settings.TrainSettings, resume: bool, log, progress):
        self.out, self.s, self.log, self.progress = Path(out), s, log, progress
        self.ckdir = self.out / "checkpoints"
        self.hparams = s.full_hparams
        # Created first: MultiWorkerMirroredStrategy must exist before TensorFlow initializes its devices.
        self.strategy = make_strategy(s.strategy)
        self.chief = worker_info(self.strategy)[2]
        self.root = write_root(
            self.out, self.strategy
        )  # out on the chief; a removed temp dir on other workers
        if s.strategy != "default":
            log(describe(self.strategy))
        tf.keras.utils.set_random_seed(s.seed)
        self._load_data()
        self._build()
        self._restore(resume)
        self.history, self.saved, self.val_text, self.t0 = [], [], "", time.time()

    def _load_data(self) -> None:
        s = self.s
        self.train_data = load_data(
            s.data,
            s.image_size,
            "train",
            s.rotations,
            seed=s.split_seed,
            progress=self.progress,
            channels=s.channels,
        )
        s = self.s = s.replace(channels=self.train_data.channels)  # decided by the data when unset
        s = self.s = s.replace(ways=run_settings.default_ways(s, self.train_data))
        self.val_data = load_data(
            s.data, s.image_size, "val", False, seed=s.split_seed, channels=s.channels
        )
        check_episode_fits(self.train_data, s.ways, s.shots, s.queries, s.within_alphabet >= 1)
        # Validation ways shrink to what the validation split holds (small folder datasets).
        val_ways, _, self.val_queries = episode_settings(self.val_data, [s.val_ways], s.val_shots)[
            0
        ]
        s = self.s = s.replace(val_ways=val_ways)
        self.log(
            f"data {s.data}: {plural(self.train_data.num_classes, 'training class')} "
            f"({plural(len(self.train_data.images), 'image')}), "
            f"{plural(self.val_data.num_classes, 'validation class')}"
        )

    def _build(self) -> None:
        s = self.s
        cfg = {
            "backbone": s.backbone,
            "head": s.head,
            "input": {"shape": [s.image_size] * 2 + [_channels(s)]},
        }
        with (
            self.strategy.scope()
        ):  # variables, optimizer and learner of a distributed run live in the strategy
            self.backbone, self.head = build_from_config(cfg)
            if s.freeze_bn:
                freeze_batchnorm(self.backbone)
            self.learner = make_learner(s.algorithm, self.backbone, self.head, self.hparams)
        self.stepper = (
            DistributedLearner(self.learner, self.strategy) if s.strategy != "default" else None
        )
        self.step_var = tf.Variable(0, dtype=tf.int64)
        self.best_var = tf.Variable(-1.0, dtype=tf.float64)
        ckpt = tf.train.Checkpoint(
            backbone=self.backbone,
            head=self.head,
            optimizer=self.learner.optimizer,
            step=self.step_var,
            best=self.best_var,
        )
        self.wckdir = self.root / "checkpoints"  # = ckdir on the chief
        self.ckpt, self.manager = (
            ckpt,
            tf.train.CheckpointManager(ckpt, str(self.wckdir), max_to_keep=2),
        )
        self.sampler = EpisodeSampler(
            self.train_data,
            s.ways,
            s.shots,
            s.queries,
            seed=s.seed,
            within_group=s.within_alphabet,
            augment=Augment(**s.augment),
        )
        self.adaptation = self.learner.device_adaptation()

    def _restore(self, resume: bool) -> None:
        # Every worker reads the chief's checkpoints.
        latest = (
            self.manager.latest_checkpoint
            if self.chief
            else tf.train.latest_checkpoint(str(self.ckdir))
        )
        if self.s.init and not (
            resume and latest
        ):  # fine-tuning: start from a trained model's weights
            self._load_init(Path(self.s.init))
        if resume and latest:
            self.ckpt.restore(latest)
            self.sampler.set_state(
                json.loads((self.ckdir / f"sampler-{self.step}.json").read_text())
            )
            self.log(f"resumed from step {self.step} ({latest})")
        self.wckdir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.wckdir / run_settings.RUN_FILE, json.dumps(self.s.to_json(), indent=2)
        )

    def _load_init(self, path: Path) -> None:
        """Copy a float model directory's backbone and head weights into the freshly built ones."""
        from .modeldir import load_head_checked, load_weights

        if read_config(path).get("stage", "float") != "float":
            raise ModelDirError(
                f"{path}: init needs a float model directory (not a compressed one)"
            )
        load_weights(self.backbone, path / "backbone.weights.h5")
        self.head.set_weights([a for wb in load_head_checked(path).weights for a in wb])
        self.log(f"starting from the weights of {path}")

    @property
    def step(self) -> int:
        return int(self.step_var.numpy())

    def update(self, sampler) -> dict:
        """One outer update: a single episode, or one per replica under a distributed strategy."""
        return (
            self.learner.train_step(sampler.sample())
            if self.stepper is None
            else self.stepper.step(sampler)
        )

    # ---- hooks of loop.run_episodes
    def after_step(self, done: int, metrics: dict, averages: Averages) -> None:
        self.step_var.assign(done)
        last = done == self.s.steps
        if done % self.s.val_every == 0 or last:
            self.validate(done, averages)
        if done % self.s.checkpoint_every == 0 or last:
            self.save_checkpoint()

    def status(self, averages: Averages) -> str:
        return averages.status() + self.val_text

    # ---- validation, model directory, checkpoints
    def head_spec(self):
        return head_spec_from_keras(self.head, self.s.head["activation"], self.adaptation)

    def validate(self, done: int, averages: Averages) -> None:
        s = self.s
        emb = embed_all(keras_embed_fn(self.backbone), self.val_data)
        val = evaluate_embeddings(
            emb,
            self.val_data,
            self.head_spec(),
            s.val_ways,
            s.val_shots,
            self.val_queries,
            s.val_episodes,
            seed=VAL_SEED,
        )
        self.history.append({"step": done, "val_acc": val["mean"], "train_loss": averages.loss})
        self.val_text = f" val {100 * val['mean']:.1f}%"
        improved = val["mean"] > self.best_var.numpy()
        if improved:
            self.best_var.assign(val["mean"])
            self.save_model(val)
        self.log(
            f"step {done}: loss {averages.loss:.3f} train acc {averages.acc:.3f} | validation "
            f"{s.val_ways}-way {s.val_shots}-shot {100 * val['mean']:.2f}% ± {100 * val['ci95']:.2f}"
            f"{' (best, saved)' if improved else ''} | {time.time() - self.t0:.0f} s"
        )

    def save_model(self, val) -> None:
        config = model_config(self.s, self.hparams, self.adaptation)
        config["metrics"] = {"val": val, "step": self.step, "history": self.history}
        save_model_dir(self.root, config, self.backbone, self.head_spec())
        self.saved.append(self.step)

    def need_model(self) -> bool:
        """True when no model directory exists yet (a final one is then written)."""
        if (
            self.s.strategy == "multiworker"
        ):  # reading BN statistics is a collective: all workers decide alike
            return self.best_var.numpy() < 0 and not self.saved
        return not (self.root / "config.json").exists()

    def save_checkpoint(self) -> None:
        step = self.step
        atomic_write_text(self.wckdir / f"sampler-{step}.json", json.dumps(self.sampler.state()))
        self.manager.save(checkpoint_number=step)
        for f in self.wckdir.glob("sampler-*.json"):  # keep sampler states of kept checkpoints only
            if not any(
                str(p).endswith(f"ckpt-{f.stem.split('-')[1]}") for p in self.manager.checkpoints
            ):
                f.unlink()

    # ---- endings
    def interrupted(self) -> Interrupted:
        """Save what Ctrl-C allows; the error to raise."""
        if (
            self.s.strategy == "multiworker"
        ):  # saving takes every worker in step; Ctrl-C reaches them at any point
            cleanup(self.root, self.out)
            return Interrupted(
                f"interrupted at step {self.step}: continue with --resume on every worker "
                f"from the last checkpoint in {self.ckdir}"
            )
        self.save_checkpoint()
        if self.need_model():
            self.save_model(None)
        cleanup(self.root, self.out)
        return Interrupted(
            f"interrupted at step {self.step}: checkpoint saved in {self.ckdir}, "
            f"model in {self.out} is usable; continue with --resume"
        )

    def finish(self) -> dict:
        """The final model directory's config (a non-chief worker that saved none: the config alone)."""
        if self.need_model():
            self.save_model(None)
        if self.stepper is not None:
            self.log(
                f"final weights digest {weights_digest(self.learner.variables)} after step {self.step}"
                f" (episodes per step: {self.stepper.replicas})"
            )
        try:
            if (self.root / "config.json").exists():
                return read_config(self.root)
            return model_config(self.s, self.hparams, self.adaptation)
        finally:
            cleanup(self.root, self.out)


def train(
    out, settings: dict, resume: bool = False, progress=None, log=None, overwrite: bool = True
) -> dict:
    """Meta-train per ``settings`` (a ``TrainSettings``, or a dict of its fields with None meaning the default)
    into model directory ``out``.

    ``resume``: continue the run in ``out`` (its saved settings; ``steps`` may grow). Otherwise an existing
    model directory at ``out`` is removed first if ``overwrite`` (the CLI's ``--force``) and refused if not.
    ``progress``: a ``metalite.common.progress.Progress`` (None: silent); ``log`` overrides its news lines.
    Returns the final config dict; Ctrl-C raises ``Interrupted`` after saving.
    """
    progress = as_progress(progress)
    log = log or progress.log
    run_settings.check_out(out, resume, overwrite)
    s = run_settings.resolve(out, settings, resume)
    if (
        not resume and (Path(out) / "config.json").exists()
    ):  # a fresh run never mixes with an old one's files
        shutil.rmtree(out)
    run = TrainingRun(out, s, resume, log, progress)
    label = f"{run.s.algorithm} {run.s.ways}-way {run.s.shots}-shot"
    try:
        run_episodes(
            run.learner,
            run.sampler,
            s.steps,
            float(run.hparams["lr"]),
            start=run.step,
            hooks=run,
            update=run.update,
            progress=progress,
            label=label,
        )
    except KeyboardInterrupt:
        raise run.interrupted() from None
    return run.finish()
