"""Episodic meta-training with validation, checkpoints, ``--resume`` and a clean Ctrl-C.

``train(out, settings)`` writes the model directory ``out`` whenever held-out validation accuracy
improves (so it is usable at any moment) and a checkpoint every ``checkpoint_every`` steps under
``out/checkpoints`` (weights, optimizer, step and the episode sampler's RNG state).
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import click

from .algorithms import DEFAULT_HPARAMS, make_learner
from .augment import DEFAULT as DEFAULT_AUGMENT, Augment
from .datasets import DataError, load_data, parse_spec
from .distribute import DistributedLearner, StrategyError, check_supported, cleanup, describe, make_strategy, \
    weights_digest, worker_info, write_root
from .episodes import EpisodeSampler, check_episode_fits
from .evaluate import embed_all, evaluate_embeddings, keras_embed_fn
from .modeldir import build_from_config, head_spec_from_keras, read_config, save_model_dir, versions
from .tfcompat import tf

# The measured recipe (docs/accuracy.md): 60-way episodes (or as many classes as the data has), rotations as
# new classes on Omniglot (None = on for omniglot: data), half the episodes within one alphabet, augmentation.
MAX_DEFAULT_WAYS = 60
DEFAULTS = {
    "data": "glyphs", "algorithm": "protonet", "backbone": {"kind": "conv4", "filters": 64, "embedding_dim": 64},
    "head": {"hidden": [64], "activation": "linear"}, "image_size": 28, "ways": None, "shots": 1, "queries": 5,
    "steps": 12000, "seed": 0, "rotations": None, "within_alphabet": 0.5, "augment": DEFAULT_AUGMENT, "hparams": {},
    "val_every": 1000, "val_episodes": 200, "val_ways": 5, "val_shots": 1, "checkpoint_every": 1000,
    "strategy": "default",
}


class Interrupted(Exception):
    """Training stopped by Ctrl-C after saving a checkpoint and a usable model directory."""


def model_config(s: dict, hparams: dict, adaptation: dict) -> dict:
    """config.json content for settings ``s`` (everything later steps need, so no flag is repeated)."""
    return {
        "algorithm": s["algorithm"], "data": s["data"], "backbone": s["backbone"], "head": s["head"],
        "input": {"shape": [s["image_size"], s["image_size"], 1], "preprocess":
                  {"color": "L", "resize": "area", "invert": True, "range": [0.0, 1.0]}},
        "adaptation": adaptation, "seed": s["seed"], "stage": "float",
        "train": {k: s[k] for k in ("ways", "shots", "queries", "steps", "rotations", "within_alphabet", "augment")}
        | {"hparams": hparams}, "versions": versions(),
    }


def _checkpoint_state_file(ckdir: Path, step: int) -> Path:
    return ckdir / f"sampler-{step}.json"


def train(out, settings: dict, resume: bool = False, progress: bool = True, log=None) -> dict:
    """Meta-train per ``settings`` (keys of DEFAULTS); returns the final config dict."""
    log = log or (lambda msg: click.echo(msg, err=True))
    out = Path(out)
    ckdir = out / "checkpoints"
    if resume:
        run_file = ckdir / "run.json"
        if not run_file.exists():
            raise click.ClickException(f"{out}: nothing to resume (no checkpoints/run.json)")
        saved = json.loads(run_file.read_text())
        # A resumed run keeps its settings; --steps may only extend it, --strategy may change.
        settings = {**saved, "steps": max(settings.get("steps") or 0, saved["steps"]),
                    **({"strategy": settings["strategy"]} if settings.get("strategy") else {})}
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    hparams = {**DEFAULT_HPARAMS[s["algorithm"]], **s["hparams"]} if s["algorithm"] in DEFAULT_HPARAMS else {}
    try:
        check_supported(s["strategy"], s["algorithm"])
    except StrategyError as e:
        raise click.ClickException(str(e)) from None
    # Created first: MultiWorkerMirroredStrategy must exist before TensorFlow initializes its devices.
    strategy = make_strategy(s["strategy"])
    chief = worker_info(strategy)[2]
    root = write_root(out, strategy)  # out on the chief; a temp dir (removed at the end) on other workers
    if s["strategy"] != "default":
        log(describe(strategy))
    tf.keras.utils.set_random_seed(s["seed"])

    if s["rotations"] is None:
        s["rotations"] = parse_spec(s["data"])[0] == "omniglot"
    train_data = load_data(s["data"], s["image_size"], "train", s["rotations"], progress=progress)
    if s["ways"] is None:
        s["ways"] = max(2, min(MAX_DEFAULT_WAYS, int((train_data.counts() >= s["shots"] + s["queries"]).sum())))
    val_data = load_data(s["data"], s["image_size"], "val", False, progress=False)
    s["within_alphabet"] = float(s["within_alphabet"])  # older runs stored a bool
    try:
        augment = Augment(**s["augment"])
    except (TypeError, ValueError) as e:
        raise DataError(f"augmentation {s['augment']}: {e}") from None
    check_episode_fits(train_data, s["ways"], s["shots"], s["queries"], s["within_alphabet"] >= 1)
    # Validation ways shrink to what the held-out split holds (small folder datasets).
    s["val_ways"] = min(s["val_ways"], int((val_data.counts() >= s["val_shots"] + 1).sum()))
    check_episode_fits(val_data, s["val_ways"], s["val_shots"], 1)
    log(f"data {s['data']}: {train_data.num_classes} training classes ({len(train_data.images)} images), "
        f"{val_data.num_classes} held-out validation classes")

    cfg = {"backbone": s["backbone"], "head": s["head"], "input": {"shape": [s["image_size"]] * 2 + [1]}}
    with strategy.scope():  # variables, optimizer and learner of a distributed run live in the strategy
        backbone, head = build_from_config(cfg)
        learner = make_learner(s["algorithm"], backbone, head, hparams)
    stepper = DistributedLearner(learner, strategy) if s["strategy"] != "default" else None
    step_var = tf.Variable(0, dtype=tf.int64)
    best_var = tf.Variable(-1.0, dtype=tf.float64)
    ckpt = tf.train.Checkpoint(backbone=backbone, head=head, optimizer=learner.optimizer, step=step_var, best=best_var)
    wckdir = root / "checkpoints"  # = ckdir on the chief
    manager = tf.train.CheckpointManager(ckpt, str(wckdir), max_to_keep=2)
    sampler = EpisodeSampler(train_data, s["ways"], s["shots"], s["queries"], seed=s["seed"],
                             within_group=s["within_alphabet"], augment=augment)
    latest = manager.latest_checkpoint if chief else tf.train.latest_checkpoint(str(ckdir))  # all read the chief's
    if resume and latest:
        ckpt.restore(latest)
        sampler.set_state(json.loads(_checkpoint_state_file(ckdir, int(step_var.numpy())).read_text()))
        log(f"resumed from step {int(step_var.numpy())} ({latest})")
    wckdir.mkdir(parents=True, exist_ok=True)
    (wckdir / "run.json").write_text(json.dumps(s, indent=2))

    adaptation = learner.device_adaptation()
    history = []

    def save_checkpoint():
        step = int(step_var.numpy())
        _checkpoint_state_file(wckdir, step).write_text(json.dumps(sampler.state()))
        manager.save(checkpoint_number=step)
        for f in wckdir.glob("sampler-*.json"):  # keep sampler states of kept checkpoints only
            if not any(str(p).endswith(f"ckpt-{f.stem.split('-')[1]}") for p in manager.checkpoints):
                f.unlink()

    def validate():
        spec = head_spec_from_keras(head, s["head"]["activation"], adaptation)
        emb = embed_all(keras_embed_fn(backbone), val_data)
        return evaluate_embeddings(emb, val_data, spec, s["val_ways"], s["val_shots"], 15 if min(
            val_data.counts()) >= s["val_shots"] + 15 else 1, s["val_episodes"], seed=1234), spec

    saved = []

    def save_model(val):
        spec = head_spec_from_keras(head, s["head"]["activation"], adaptation)
        config = model_config(s, hparams, adaptation)
        config["metrics"] = {"val": val, "step": int(step_var.numpy()), "history": history}
        save_model_dir(root, config, backbone, spec)
        saved.append(config["metrics"]["step"])

    def need_model():  # a final model dir when none exists yet
        if s["strategy"] == "multiworker":  # reading BN statistics is a collective: all workers decide alike
            return best_var.numpy() < 0 and not saved
        return not (root / "config.json").exists()

    start = int(step_var.numpy())
    base_lr = float(hparams["lr"])
    stats = {"loss": float("nan"), "acc": float("nan"), "val": ""}
    t0 = time.time()
    bar = click.progressbar(length=s["steps"], label=f"{s['algorithm']} {s['ways']}-way {s['shots']}-shot",
                            file=sys.stderr, show_pos=True, show_eta=True,
                            item_show_func=lambda _: f"loss {stats['loss']:.3f} acc {stats['acc']:.3f}{stats['val']}")
    bar.update(start)
    try:
        with bar:
            for step in range(start, s["steps"]):
                # Cosine decay of the outer learning rate (Reptile's epsilon included) to 0 at the last step.
                learner.optimizer.learning_rate.assign(base_lr * 0.5 * (1 + math.cos(math.pi * step / s["steps"])))
                m = learner.train_step(sampler.sample()) if stepper is None else stepper.step(sampler)
                a = 0.1 if step > start else 1.0
                stats["loss"] = m["loss"] if step == start else (1 - a) * stats["loss"] + a * m["loss"]
                stats["acc"] = m["acc"] if step == start else (1 - a) * stats["acc"] + a * m["acc"]
                step_var.assign(step + 1)
                bar.update(1)
                done = step + 1 == s["steps"]
                if (step + 1) % s["val_every"] == 0 or done:
                    val, _ = validate()
                    history.append({"step": step + 1, "val_acc": val["mean"], "train_loss": stats["loss"]})
                    stats["val"] = f" val {100 * val['mean']:.1f}%"
                    improved = val["mean"] > best_var.numpy()
                    if improved:
                        best_var.assign(val["mean"])
                        save_model(val)
                    log(f"\nstep {step + 1}: loss {stats['loss']:.3f} train acc {stats['acc']:.3f} | val "
                        f"{s['val_ways']}-way {s['val_shots']}-shot {100 * val['mean']:.2f}% ± {100 * val['ci95']:.2f}"
                        f"{' (best, saved)' if improved else ''} | {time.time() - t0:.0f}s")
                if (step + 1) % s["checkpoint_every"] == 0 or done:
                    save_checkpoint()
    except KeyboardInterrupt:
        if s["strategy"] == "multiworker":  # saving takes every worker in step; Ctrl-C reaches them at any point
            cleanup(root, out)
            raise Interrupted(f"interrupted at step {int(step_var.numpy())}: continue with --resume on every worker "
                              f"from the last checkpoint in {ckdir}") from None
        save_checkpoint()
        if need_model():
            save_model(None)
        cleanup(root, out)
        raise Interrupted(f"interrupted at step {int(step_var.numpy())}: checkpoint saved in {ckdir}, "
                          f"model in {out} is usable; continue with --resume") from None
    if need_model():
        save_model(None)
    if stepper is not None:
        log(f"final weights digest {weights_digest(learner.variables)} after step {int(step_var.numpy())}"
            f" (episodes per step: {stepper.replicas})")
    try:  # a non-chief worker that saved no model this run returns the config alone
        return read_config(root) if (root / "config.json").exists() else model_config(s, hparams, adaptation)
    finally:
        cleanup(root, out)
