"""``metalite fleet update``: turn what the devices sent into a better bundle, or say why not.

Starts from the float model of the current release (kept by ``fleet publish --model``), streams the
fleet's labelled examples (corrections and shared support sets) next to a replay sample of the original
training data into a folder dataset, fine-tunes episodically with ``training.trainer.train`` (its
checkpoints make the update resumable), compresses (PQAT), exports, and evaluates candidate against
current through the device runtime on (a) a held-out slice of the fleet's labelled examples and (b) the
original held-out validation classes. Publishes only if the candidate is not worse on either.

Work directory (resumable; a rerun for the same base version and examples picks up where it stopped)::

    ROOT/updates/v<base>/  plan.json (base version, last example seq, stages done), base/ (float model),
                           data/{train,val}/<class>/*.png + fleet_holdout/<class>/*.png, float/, pqat/,
                           bundle/, current/
    ROOT/updates/last.json the last decision with both figures (``fleet status`` shows it)
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from metalite.runtime.plural import plural

from .progress import ConsoleProgress

LABELLED = ("correction", "support")
HOLDOUT_EVERY = 5  # one labelled fleet example in five is held out for the gate (by a hash of its id)
MAX_SUPPORT = 20  # support images per fleet class when evaluating (a) through the runtime


def _slug(label, taken: dict) -> str:
    """A folder name for a fleet label (unique per label)."""
    key = json.dumps(label)
    if key not in taken:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(label))[:60] or "label"
        taken[key] = f"fleet-{len(taken):04d}-{base}"
    return taken[key]


def _held_out(ex: dict) -> bool:
    """One labelled example in HOLDOUT_EVERY, chosen by its label and pixels: the same every update (not
    by the random ids devices make), and an image two devices sent lands on the same side."""
    digest = hashlib.sha256(json.dumps(ex["label"]).encode() + b"|" + np.ascontiguousarray(ex["image"]).tobytes())
    return digest.digest()[0] % HOLDOUT_EVERY == 0


def _save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img, np.uint8)).save(path)


def write_fleet_data(root, data: Path, last_seq: int, size: int) -> dict:
    """Stream the labelled examples up to ``last_seq`` into ``data/train`` and ``data/fleet_holdout``."""
    from metalite.fleet import iter_examples

    slugs, counts = {}, {"train": 0, "holdout": 0, "skipped": 0}
    for ex in iter_examples(root, kinds=LABELLED):
        if ex["seq"] > last_seq:
            break
        if ex["label"] is None or ex["image"].shape[:2] != (size, size):
            counts["skipped"] += 1
            continue
        part = "fleet_holdout" if _held_out(ex) else "train"
        _save_png(data / part / _slug(ex["label"], slugs) / f"{ex['seq']:09d}.png", ex["image"])
        counts["holdout" if part == "fleet_holdout" else "train"] += 1
    (data / "labels.json").write_text(json.dumps({v: json.loads(k) for k, v in slugs.items()}, indent=1))
    return {**counts, "classes": len(slugs)}


def write_replay(spec: str, size: int, data: Path, replay: int, val_classes: int, seed: int = 0) -> dict:
    """A replay sample of the original training classes into ``data/train`` and validation classes into ``data/val``."""
    from metalite.training.datasets import load_data

    out = {}
    for split, sub, n in (("train", "train", replay), ("val", "val", val_classes)):
        ds = load_data(spec, size, split, )
        pick = np.random.default_rng(seed).permutation(ds.num_classes)[:n]
        for c in pick:
            for j, i in enumerate(ds.indices_of(int(c))):
                _save_png(data / sub / f"orig-{int(c):05d}" / f"{j:04d}.png", ds.images[i])
        out[split] = len(pick)
    return out


def _fine_tune(work: Path, cfg: dict, steps: int, strategy, lr_scale: float, say) -> None:
    from metalite.training.datasets import load_data
    from metalite.training.trainer import train

    data = load_data(f"folder:{work / 'data'}", int(cfg["input"]["shape"][0]), "train", )
    tr = cfg.get("train", {})
    shots = int(tr.get("shots") or 1)
    usable = int((data.counts() >= shots + 2).sum())
    hparams = dict(tr.get("hparams") or {})
    if "lr" in hparams:
        hparams["lr"] = float(hparams["lr"]) * lr_scale
    settings = {
        "data": f"folder:{work / 'data'}", "algorithm": cfg["algorithm"], "backbone": cfg["backbone"],
        "head": cfg["head"], "image_size": int(cfg["input"]["shape"][0]), "shots": shots, "queries": 2,
        "ways": max(2, min(int(tr.get("ways") or 20), usable)), "steps": int(steps), "seed": int(cfg.get("seed", 0)),
        "rotations": False, "within_alphabet": 0.0, "augment": tr.get("augment") or {}, "hparams": hparams,
        "val_every": int(steps), "val_episodes": 100, "checkpoint_every": max(1, int(steps) // 4),
        "strategy": strategy, "init": str(work / "base"),
    }
    resume = (work / "float" / "checkpoints" / "run.json").is_file()
    say(("resuming" if resume else "starting")
        + f" fine-tuning: {plural(steps, 'step')} on {plural(data.num_classes, 'class')}")
    train(work / "float", settings, resume=resume, progress=ConsoleProgress(), log=say)


def _compress_export(work: Path, prune_steps: int, qat_steps: int, say) -> Path:
    from metalite.export.bundle import write_bundle
    from metalite.training.compress import compress
    from metalite.training.datasets import load_data
    from metalite.training.modeldir import load_model_dir

    from metalite.training.datasets import representative_inputs

    from .cli_export import meta_from_config

    if (work / "pqat").exists() and not (work / "pqat" / "config.json").is_file():
        shutil.rmtree(work / "pqat")
    if not (work / "pqat" / "config.json").is_file():
        say(f"compressing (prune {prune_steps} + PQAT {qat_steps} steps)")
        compress(work / "float", work / "pqat", prune_steps=prune_steps, qat_steps=qat_steps, episodes=50,
                 eval_ways=(5,), int8_check=False, progress=ConsoleProgress(), log=say)
    cfg, backbone, spec = load_model_dir(work / "pqat")
    reps = representative_inputs(load_data(cfg["data"], int(cfg["input"]["shape"][0]), "train"), 200)
    return write_bundle(work / "bundle", backbone, spec, reps, meta_from_config(cfg), progress=ConsoleProgress(),
                        overwrite=True)


def _images_by_class(folder: Path, limit: int | None = None) -> dict:
    from PIL import Image

    out = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        files = sorted(d.glob("*.png"))[:limit]
        out[d.name] = np.stack([np.asarray(Image.open(f).convert("L")) for f in files])
    return out


def fleet_holdout_accuracy(bundle, data: Path) -> tuple:
    """(accuracy, images, classes) of ``bundle`` adapted on the fleet's training examples, on the held-out slice."""
    from metalite.runtime import FewShotClassifier

    held = _images_by_class(data / "fleet_holdout")
    support = {c: v for c, v in _images_by_class(data / "train", MAX_SUPPORT).items() if c.startswith("fleet-")}
    classes = [c for c in held if c in support]
    if len(classes) < 2:
        return None, 0, len(classes)
    clf = FewShotClassifier(bundle, delegate="cpu").fit({c: support[c] for c in classes})
    x = np.concatenate([held[c] for c in classes])
    y = [c for c in classes for _ in range(len(held[c]))]
    pred = clf.predict(x)
    return float(np.mean([p == t for p, t in zip(pred, y)])), len(y), len(classes)


def original_val_accuracy(bundle, spec: str, size: int, episodes: int, seed: int = 0) -> float:
    """5-way 1-shot accuracy of ``bundle`` (int8 backbone through the runtime) on the original validation classes."""
    from metalite.runtime import FewShotClassifier
    from metalite.runtime.head import load_head
    from metalite.training.datasets import load_data
    from metalite.training.evaluate import evaluate_embeddings

    val = load_data(spec, size, "val", )
    clf = FewShotClassifier(bundle, delegate="cpu")
    emb = np.concatenate([clf.embed(val.images[i:i + 256]) for i in range(0, len(val.images), 256)])
    queries = 5 if min(val.counts()) >= 6 else 1
    return evaluate_embeddings(emb, val, load_head(Path(bundle) / "head.npz"), 5, 1, queries, episodes, seed)["mean"]


def _plan(root, work: Path, base: int) -> dict:
    """The update's plan (kept in ``plan.json`` so a rerun continues it): base version, examples up to ``last_seq``."""
    p = work / "plan.json"
    if p.is_file():
        plan = json.loads(p.read_text())
        if plan.get("base") == base:
            return plan
        shutil.rmtree(work)
    last = root.db().execute("SELECT coalesce(max(seq), 0) FROM examples").fetchone()[0]
    work.mkdir(parents=True, exist_ok=True)
    plan = {"base": base, "last_seq": int(last), "done": []}
    _save_plan(work, plan)
    return plan


def _save_plan(work: Path, plan: dict) -> None:
    tmp = work / "plan.json.tmp"
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.replace(work / "plan.json")


def _prepare(root, work: Path, plan: dict, model_dir, replay: int, val_classes: int, say) -> dict:
    """Base model and data (each step once, recorded in the plan)."""
    from metalite.fleet import export_model
    from metalite.training.modeldir import read_config

    if "base" not in plan["done"]:
        shutil.rmtree(work / "base", ignore_errors=True)
        if model_dir is not None:
            shutil.copytree(model_dir, work / "base", ignore=shutil.ignore_patterns("checkpoints"))
        else:
            export_model(root, plan["base"], work / "base")
        plan["done"].append("base")
        _save_plan(work, plan)
    cfg = read_config(work / "base")
    if cfg.get("stage", "float") != "float":
        raise ValueError(f"{work / 'base'}: the update starts from a float model, this one is {cfg['stage']!r}")
    if "data" not in plan["done"]:
        shutil.rmtree(work / "data", ignore_errors=True)
        size = int(cfg["input"]["shape"][0])
        say(f"streaming the fleet's labelled examples (up to #{plan['last_seq']})")
        plan["examples"] = write_fleet_data(root, work / "data", plan["last_seq"], size)
        if plan["examples"]["train"] == 0 or plan["examples"]["holdout"] == 0:
            raise ValueError(f"too few labelled examples from the fleet to update and evaluate ({plan['examples']})")
        say(f"replaying {replay} original training classes from {cfg['data']}")
        plan["replay"] = write_replay(cfg["data"], size, work / "data", replay, val_classes, int(cfg.get("seed", 0)))
        plan["done"].append("data")
        _save_plan(work, plan)
    return cfg


def _evaluate(root, work: Path, plan: dict, candidate: Path, cfg: dict, episodes: int, say) -> dict:
    from metalite.fleet import export_bundle

    shutil.rmtree(work / "current", ignore_errors=True)
    current = export_bundle(root, plan["base"], work / "current")
    size = int(cfg["input"]["shape"][0])
    m = {"base": plan["base"], "last_seq": plan["last_seq"], "examples": plan.get("examples"),
         "replay": plan.get("replay")}
    say("evaluating current and candidate on the held-out fleet examples")
    fa = [fleet_holdout_accuracy(b, work / "data") for b in (current, candidate)]
    m["fleet_holdout"] = {"current": fa[0][0], "candidate": fa[1][0], "images": fa[1][1], "classes": fa[1][2]}
    say(f"evaluating on the original validation classes ({episodes} 5-way 1-shot episodes)")
    ov = [original_val_accuracy(b, cfg["data"], size, episodes) for b in (current, candidate)]
    m["original_val"] = {"current": ov[0], "candidate": ov[1], "episodes": episodes, "data": f"{cfg['data']} val"}
    return m


def gate(metrics: dict, max_drop: float = 0.0) -> str | None:
    """Why the candidate must not be published (one line), or None if it is not worse on either measure."""
    for key, what in (("fleet_holdout", "held-out fleet examples"), ("original_val", "original validation")):
        v = metrics[key]
        if v["current"] is None:
            return f"cannot compare on the {what} (fewer than 2 classes with held-out examples)"
        if v["candidate"] < v["current"] - max_drop - 1e-9:
            return (f"candidate is worse on the {what}: {100 * v['candidate']:.2f}% < {100 * v['current']:.2f}% "
                    f"(allowed drop {100 * max_drop:.2f} pt)")
    return None


def _exclusive(updates: Path):
    """Hold ``updates/.lock``: a scheduled and a manual update of one fleet never share a work directory."""
    from metalite.fleet import FleetError
    from metalite.runtime.files import file_lock

    updates.mkdir(parents=True, exist_ok=True)
    return file_lock(updates / ".lock", blocking=False,
                     busy=FleetError(f"another fleet update of {updates.parent} is running"))


def update(root, model_dir=None, candidate=None, steps: int = 300, strategy: str | None = None, replay: int = 300,
           val_classes: int = 50, lr_scale: float = 0.3, prune_steps: int = 30, qat_steps: int = 30,
           episodes: int = 300, max_drop: float = 0.0, say=print) -> dict:
    """Fine-tune, compress, export, gate and maybe publish; returns the decision with its figures.

    Args:
      root: a ``FleetRoot``. model_dir: float model to start from (default: the one kept with the current
        release). candidate: a bundle to gate instead of training one (the fine-tuning steps are skipped).
      steps, strategy, lr_scale: the fine-tuning run (``lr_scale`` times the model's learning rate).
      replay, val_classes: original training classes replayed / validation classes for model selection.
      prune_steps, qat_steps: compression. episodes: 5-way 1-shot episodes of the original validation.
      max_drop: allowed drop on either measure (0: the candidate must not be worse at all).
    Returns:
      {"decision": "published" | "kept", "reason", "version", "fleet_holdout", "original_val", "seconds", ...}.
    """
    from metalite.fleet import FleetError, latest_offer
    from metalite.runtime.errors import one_line

    t0 = time.time()
    offer = latest_offer(root)
    if offer is None:
        raise FleetError("nothing to update: no release published yet")
    try:
        with _exclusive(root.path / "updates"):
            return _run(root, offer["version"], model_dir, candidate, steps, strategy, replay, val_classes,
                        lr_scale, prune_steps, qat_steps, episodes, max_drop, say, t0)
    except FleetError:
        raise
    except ValueError as e:  # the training side's one-line errors (data, model directory, compression, export)
        raise FleetError(f"update failed: {one_line(e)}") from None


def _run(root, base, model_dir, candidate, steps, strategy, replay, val_classes, lr_scale, prune_steps, qat_steps,
         episodes, max_drop, say, t0) -> dict:
    from metalite.fleet import publish

    work = root.path / "updates" / f"v{base}"
    plan = _plan(root, work, base)
    cfg = _prepare(root, work, plan, model_dir, replay, val_classes, say)
    if candidate is None:
        if "train" not in plan["done"]:
            _fine_tune(work, cfg, steps, strategy, lr_scale, say)
            plan["done"].append("train")
            _save_plan(work, plan)
        candidate = _compress_export(work, prune_steps, qat_steps, say)
    m = _evaluate(root, work, plan, Path(candidate), cfg, episodes, say)
    reason = gate(m, max_drop)
    m["seconds"] = round(time.time() - t0, 1)
    if reason is None:
        float_dir = work / "float" if (work / "float" / "config.json").is_file() else None
        r = publish(root, candidate, model_dir=float_dir, note=f"fleet update of v{base}", metrics=m)
        m.update(decision="published", version=r["version"], reason="not worse on either measure")
    else:
        m.update(decision="kept", version=base, reason=reason)
    shutil.rmtree(work, ignore_errors=True)  # decided: the next update starts afresh with the examples then
    (root.path / "updates").mkdir(exist_ok=True)
    (root.path / "updates" / "last.json").write_text(json.dumps(m, indent=1))
    return m
