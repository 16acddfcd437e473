"""``metalite fleet update``: turn what the devices sent into a better bundle, or say why not.

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

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np

from metalite.common.progress import as_progress
from metalite.runtime.plural import plural

HOLDOUT_EVERY = 5  # per class, one distinct image in five is held out for the gate (at least one of two or more)
MAX_SUPPORT = 20  # support images per fleet class when evaluating (a) through the runtime
UNSEEN_WAYS, UNSEEN_EPISODES = 20, 600  # "no damage": 20-way 1-shot, paired, on classes no one trained on
UNSEEN_CLASSES = 300  # at most this many of them (a seeded draw): every image is embedded (1 + tta) times per bundle
KEEP_REJECTED = 3  # rejected candidates kept under updates/rejected/ (the newest)


def _slug(label, taken: dict) -> str:
    """A folder name for a fleet label (unique per label)."""
    key = json.dumps(label)
    if key not in taken:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(label))[:60] or "label"
        taken[key] = f"fleet-{len(taken):04d}-{base}"
    return taken[key]


def _pixels_digest(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img, np.uint8).tobytes()).hexdigest()


def _digest(ex: dict) -> str:
    """The content of a labelled example (label and pixels): a correction also sent as support is one image."""
    return hashlib.sha256(json.dumps(ex["label"]).encode() + b"|" + _pixels_digest(ex["image"]).encode()).hexdigest()


def choose_holdout(items: list) -> set:
    """Digests held out for the gate, stratified: every class with >= 2 distinct images has max(1, n // 5)
    held out, taken in turn from each device that sent the class (lowest digest first: the same every update).

    ``items``: (digest, label key, device) of the distinct labelled examples, first sender's device."""
    by_class: dict = {}
    for digest, label, device in items:
        by_class.setdefault(label, {}).setdefault(device, []).append(digest)
    held = set()
    for devices in by_class.values():
        n = sum(len(v) for v in devices.values())
        if n < 2:
            continue
        queues = [sorted(devices[d]) for d in sorted(devices)]
        k, turn = max(1, n // HOLDOUT_EVERY), 0
        while k:
            q = queues[turn % len(queues)]
            if q:
                held.add(q.pop(0))
                k -= 1
            turn += 1
    return held


def _save_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img, np.uint8)).save(path)


def write_fleet_data(root, data: Path, last_seq: int, size: int) -> dict:
    """De-duplicate the labelled examples up to ``last_seq`` by content and write them to ``data/train`` and
    ``data/fleet_holdout`` (stratified by class and device, ``choose_holdout``); returns the counts."""
    from metalite.fleet.examples import LABELLED, iter_examples

    def distinct():
        seen = set()
        for ex in iter_examples(root, kinds=LABELLED):
            if ex["seq"] > last_seq:
                return
            if ex["label"] is None or ex["image"].shape[:2] != (size, size):
                yield None, ex
                continue
            d = _digest(ex)
            if d not in seen:
                seen.add(d)
                yield d, ex
            else:
                yield "", ex

    items, counts = [], {"train": 0, "holdout": 0, "skipped": 0, "duplicates": 0}
    for d, ex in distinct():
        if d:
            items.append((d, json.dumps(ex["label"]), ex["device"]))
    held = choose_holdout(items)
    slugs, pixels = {}, set()
    for d, ex in distinct():
        if d is None:
            counts["skipped"] += 1
            continue
        if d == "":
            counts["duplicates"] += 1
            continue
        part = "fleet_holdout" if d in held else "train"
        _save_png(data / part / _slug(ex["label"], slugs) / f"{ex['seq']:09d}.png", ex["image"])
        counts["holdout" if part == "fleet_holdout" else "train"] += 1
        pixels.add(_pixels_digest(ex["image"]))
    (data / "labels.json").write_text(json.dumps({v: json.loads(k) for k, v in slugs.items()}, indent=1))
    (data / "pixels.json").write_text(json.dumps(sorted(pixels)))  # what the fleet sent: not "unseen" classes
    held_classes = {p.name for p in (data / "fleet_holdout").iterdir()} if (data / "fleet_holdout").is_dir() else set()
    return {**counts, "classes": len(slugs), "holdout_classes": len(held_classes)}


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


def _fine_tune(work: Path, cfg: dict, steps: int, strategy, lr_scale: float, say, progress) -> None:
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
    train(work / "float", settings, resume=resume, progress=progress, log=say)


def release_recipe(manifest: dict, overrides: dict | None = None) -> dict:
    """How a release was packaged (from its manifest): shift averaging, compression stage, sparsity,
    distillation, widths and compression steps; ``overrides`` (non-None values) replace any of them."""
    comp, train = manifest.get("compression") or {}, manifest.get("training") or {}
    ad = (manifest.get("head") or {}).get("adaptation") or {}
    steps = comp.get("steps") or {}
    r = {"tta": int(ad.get("tta") or 0), "pqat": bool(comp.get("pqat")), "sparsity": float(comp.get("sparsity") or 0),
         "distill": comp.get("distill") or None, "widths": (train.get("backbone") or {}).get("widths"),
         "prune_steps": int(steps.get("prune") or 0), "qat_steps": int(steps.get("qat") or 0),
         "structured_steps": int(steps.get("structured") or 0)}
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


def _compress_export(work: Path, cfg: dict, recipe: dict, say, progress) -> Path:
    """The fine-tuned float model packaged like the release (``recipe``): compressed the same way, then exported."""
    from metalite.export.bundle import write_bundle
    from metalite.training.compress import compress
    from metalite.training.datasets import load_data, representative_inputs
    from metalite.training.modeldir import load_model_dir, meta_from_config

    thin = _thinning(cfg["backbone"], recipe["widths"])
    if recipe["pqat"] or recipe["sparsity"] > 0 or thin:
        if (work / "pqat").exists() and not (work / "pqat" / "config.json").is_file():
            shutil.rmtree(work / "pqat")
        if not (work / "pqat" / "config.json").is_file():
            say(f"compressing like the release: sparsity {recipe['sparsity']:g}, PQAT {recipe['pqat']}, "
                f"prune {recipe['prune_steps']} + QAT {recipe['qat_steps']} steps"
                + (f", thinned to widths {recipe['widths']}" if thin else ""))
            compress(work / "float", work / "pqat", sparsity=recipe["sparsity"],
                     prune_steps=max(1, recipe["prune_steps"]), qat_steps=recipe["qat_steps"], qat=recipe["pqat"],
                     distill=bool(recipe["distill"]), distill_loss=recipe["distill"] or "mse", episodes=50,
                     eval_ways=(5,), int8_check=False, progress=progress, log=say,
                     structured=thin or 0.0, structured_steps=recipe["structured_steps"] if thin else None,
                     structured_multiple=1)
        source = work / "pqat"
    else:
        source = work / "float"
    mcfg, backbone, spec = load_model_dir(source)
    if thin and mcfg["backbone"].get("widths") != list(recipe["widths"]):
        raise ValueError(f"thinning gave widths {mcfg['backbone'].get('widths')}, the release has {recipe['widths']}")
    spec.adaptation["tta"] = int(recipe["tta"])
    reps = representative_inputs(load_data(mcfg["data"], int(mcfg["input"]["shape"][0]), "train"), 200)
    return write_bundle(work / "bundle", backbone, spec, reps, meta_from_config(mcfg), progress=progress,
                        overwrite=True)


def keep_float_model(work: Path, cfg: dict, recipe: dict, plan: dict, dest: Path) -> Path:
    """A self-contained copy of the fine-tuned float model at ``dest``: its ``data`` is the base's replay
    source (not this update's folder, which is deleted), it carries the release's tta, and says where it came from."""
    from metalite.common.files import atomic_write_text

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(work / "float", dest, ignore=shutil.ignore_patterns("checkpoints"))
    mcfg = json.loads((dest / "config.json").read_text())
    mcfg["data"] = cfg["data"]
    mcfg["adaptation"] = {**(mcfg.get("adaptation") or {}), "tta": int(recipe["tta"])}
    mcfg["fleet_update"] = {"base": plan["base"], "last_seq": plan["last_seq"], "examples": plan.get("examples"),
                            "recipe": recipe}
    atomic_write_text(dest / "config.json", json.dumps(mcfg, indent=1))
    return dest


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


def unseen_classes(spec: str, size: int, fleet_pixels: set, max_classes: int = UNSEEN_CLASSES, seed: int = 0):
    """The test split of ``spec`` without every group (alphabet) that has an image the fleet sent: classes that
    neither the original training, its validation, nor this update touched; at most ``max_classes`` of them."""
    from metalite.training.datasets import load_data

    test = load_data(spec, size, "test")
    touched = {test.groups[int(test.labels[i])] for i in range(len(test.images))
               if _pixels_digest(test.images[i]) in fleet_pixels}
    keep = [c for c in range(test.num_classes) if test.groups[c] not in touched]
    if len(keep) < 2:
        raise ValueError(f"{spec}: fewer than 2 test classes left outside the {len(touched)} groups the fleet sent "
                         "images of; nothing to check for damage on")
    if len(keep) > max_classes:
        keep = sorted(np.random.default_rng(seed).permutation(keep)[:max_classes].tolist())
    return test.subset(keep), sorted(touched)


def paired_unseen(bundles: list, data, ways: int, episodes: int, seed: int = 0) -> dict:
    """N-way 1-shot accuracy of each bundle on the same ``episodes`` episodes (through the runtime, each with its
    own head and tta) and the paired difference candidate - current with its 95% CI."""
    from metalite.runtime import FewShotClassifier
    from metalite.runtime.head import adapt, load_head
    from metalite.training.episodes import EpisodeSampler
    from metalite.training.evaluate import mean_ci95

    ways = min(ways, data.num_classes)
    queries = 5 if min(data.counts()) >= 6 else 1
    embs, heads = [], []
    for b in bundles:
        clf = FewShotClassifier(b, delegate="cpu")
        embs.append(np.concatenate([clf.embed(data.images[i:i + 256]) for i in range(0, len(data.images), 256)]))
        heads.append(load_head(Path(b) / "head.npz"))
    sampler = EpisodeSampler(data, ways, 1, queries, seed=seed)
    ys, yq = np.arange(ways), np.repeat(np.arange(ways), queries)
    accs = [[] for _ in bundles]
    for _ in range(episodes):
        s_idx, q_idx = sampler.sample_indices()
        for a, e, h in zip(accs, embs, heads):
            a.append(float((adapt(h, e[s_idx], ys, ways).logits(e[q_idx]).argmax(1) == yq).mean()))
    diff = mean_ci95(np.asarray(accs[1]) - np.asarray(accs[0]))
    return {"current": float(np.mean(accs[0])), "candidate": float(np.mean(accs[1])), "diff": diff[0],
            "ci95": diff[1], "ways": ways, "shots": 1, "queries": queries, "episodes": episodes,
            "classes": data.num_classes}


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
    tmp = work / "plan.json.tmp"
    tmp.write_text(json.dumps(plan, indent=1))
    tmp.replace(work / "plan.json")


def _prepare(root, work: Path, plan: dict, model_dir, replay: int, val_classes: int, say) -> dict:
    """Base model, current bundle and data (each step once, recorded in the plan)."""
    from metalite.fleet import export_bundle, export_model
    from metalite.training.modeldir import read_config

    if "base" not in plan["done"]:
        shutil.rmtree(work / "base", ignore_errors=True)
        shutil.rmtree(work / "current", ignore_errors=True)
        export_bundle(root, plan["base"], work / "current")
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
        say(f"streaming the fleet's labelled examples (up to #{plan['last_seq']}), de-duplicated by content")
        plan["examples"] = write_fleet_data(root, work / "data", plan["last_seq"], size)
        if plan["examples"]["train"] == 0 or plan["examples"]["holdout"] == 0:
            raise ValueError(f"too few labelled examples from the fleet to update and evaluate ({plan['examples']})")
        say(f"replaying {replay} original training classes from {cfg['data']}")
        plan["replay"] = write_replay(cfg["data"], size, work / "data", replay, val_classes, int(cfg.get("seed", 0)))
        plan["done"].append("data")
        _save_plan(work, plan)
    return cfg


def _evaluate(work: Path, plan: dict, candidate: Path, cfg: dict, ways: int, episodes: int, unseen: int,
              say) -> dict:
    current = work / "current"
    size = int(cfg["input"]["shape"][0])
    m = {"base": plan["base"], "last_seq": plan["last_seq"], "examples": plan.get("examples"),
         "replay": plan.get("replay")}
    say("evaluating current and candidate on the held-out fleet examples")
    fa = [fleet_holdout_accuracy(b, work / "data") for b in (current, candidate)]
    m["fleet_holdout"] = {"current": fa[0][0], "candidate": fa[1][0], "images": fa[1][1], "classes": fa[1][2]}
    pixels = set(json.loads((work / "data" / "pixels.json").read_text()))
    data, touched = unseen_classes(cfg["data"], size, pixels, unseen)
    say(f"evaluating on {data.num_classes} classes no one trained on ({cfg['data']} test split without the "
        f"{len(touched)} groups the fleet sent images of): {episodes} paired {min(ways, data.num_classes)}-way "
        f"1-shot episodes")
    m["unseen"] = {**paired_unseen([current, candidate], data, ways, episodes), "data": f"{cfg['data']} test",
                   "groups_left_out": touched}
    return m


def gate(metrics: dict, max_drop: float = 0.0) -> str | None:
    """Why the candidate must not be published (one line, with the thresholds), or None if it may be.

    Held-out fleet examples: not worse by more than ``max_drop``. Unseen classes: the paired drop must not
    exceed ``max_drop`` plus its 95% CI (a drop the episodes cannot tell from noise is not damage)."""
    v = metrics["fleet_holdout"]
    if v["current"] is None:
        return "cannot compare on the held-out fleet examples (fewer than 2 classes with held-out examples)"
    if v["candidate"] < v["current"] - max_drop - 1e-9:
        return (f"candidate is worse on the held-out fleet examples: {100 * v['candidate']:.2f}% < "
                f"{100 * v['current']:.2f}% (allowed drop {100 * max_drop:.2f} pt, {v['images']} images)")
    u = metrics["unseen"]
    if u["diff"] < -(max_drop + u["ci95"]) - 1e-9:
        return (f"candidate damages classes no one trained on: {u['ways']}-way 1-shot {100 * u['current']:.2f}% -> "
                f"{100 * u['candidate']:.2f}% (paired {100 * u['diff']:+.2f} pt, allowed -{100 * max_drop:.2f} pt "
                f"- CI {100 * u['ci95']:.2f} pt, {u['episodes']} episodes)")
    return None


def decision_text(m: dict, max_drop: float) -> str:
    """The figures and thresholds of a decision in one line."""
    v, u = m["fleet_holdout"], m["unseen"]
    return (f"held-out fleet examples {100 * v['current']:.1f}% -> {100 * v['candidate']:.1f}% ({v['images']} images, "
            f"{v['classes']} classes, allowed drop {100 * max_drop:.2f} pt); unseen {u['ways']}-way 1-shot "
            f"{100 * u['current']:.2f}% -> {100 * u['candidate']:.2f}% (paired {100 * u['diff']:+.2f} "
            f"± {100 * u['ci95']:.2f} pt, {u['episodes']} episodes, allowed -{100 * max_drop:.2f} pt - CI)")


def _exclusive(updates: Path):
    """Hold ``updates/.lock``: a scheduled and a manual update of one fleet never share a work directory."""
    from metalite.fleet import FleetError
    from metalite.common.locks import file_lock

    updates.mkdir(parents=True, exist_ok=True)
    return file_lock(updates / ".lock", blocking=False,
                     busy=FleetError(f"another fleet update of {updates.parent} is running"))


def update(root, model_dir=None, candidate=None, candidate_model=None, steps: int = 300, strategy: str | None = None,
           replay: int = 300, val_classes: int = 50, lr_scale: float = 0.3, recipe: dict | None = None,
           ways: int = UNSEEN_WAYS, episodes: int = UNSEEN_EPISODES, unseen: int = UNSEEN_CLASSES,
           max_drop: float = 0.0,
           keep_rejected: int = KEEP_REJECTED, say=print, progress=None) -> dict:
    """Fine-tune, package like the current release, gate and maybe publish; returns the decision with its figures.

    Args:
      root: a ``FleetRoot``. model_dir: float model to start from (default: the one kept with the current
        release). candidate: a bundle to gate instead of training one (the fine-tuning steps are skipped);
        candidate_model: its float model directory (default: ``model/`` beside a kept rejected candidate).
      steps, strategy, lr_scale: the fine-tuning run (``lr_scale`` times the model's learning rate).
      replay, val_classes: original training classes replayed / validation classes for model selection.
      recipe: overrides of the release's packaging (``release_recipe`` keys: tta, sparsity, prune_steps, ...).
      ways, episodes, unseen: the paired N-way 1-shot episodes on (at most ``unseen``) classes no one trained on.
      max_drop: allowed drop (0: the candidate must not be worse on the held-out fleet examples, nor
        worse beyond the paired CI on the unseen classes). keep_rejected: rejected candidates kept.
      say: where the news lines go. progress: a ``metalite.common.progress.Progress`` for the training,
        compression and export steps (None: silent).
    Returns:
      {"decision": "published" | "kept", "reason", "version", "fleet_holdout", "unseen", "seconds", ...}.
    """
    from metalite.fleet import FleetError, latest_offer
    from metalite.runtime.errors import one_line

    t0 = time.time()
    offer = latest_offer(root)
    if offer is None:
        raise FleetError("nothing to update: no release published yet")
    kept = Path(candidate).resolve().parent if candidate is not None else None
    if kept is not None and candidate_model is None and kept.parent == (root.path / "updates" / "rejected").resolve() \
            and (kept / "model").is_dir():
        candidate_model = kept / "model"  # a kept rejected candidate: updates/rejected/<id>/{bundle,model}
    if candidate is not None and model_dir is None and candidate_model is not None:
        model_dir = candidate_model  # its data and input size; the current release may keep no float model
    try:
        with _exclusive(root.path / "updates"):
            return _run(root, offer["version"], model_dir, candidate, candidate_model, steps, strategy, replay,
                        val_classes, lr_scale, recipe or {}, ways, episodes, unseen, max_drop, keep_rejected, say,
                        as_progress(progress), t0)
    except FleetError:
        raise
    except ValueError as e:  # the training side's one-line errors (data, model directory, compression, export)
        raise FleetError(f"update failed: {one_line(e)}") from None


def _keep_rejected(updates: Path, base: int, bundle: Path, model: Path | None, m: dict, keep: int) -> Path | None:
    """Move a rejected candidate (bundle, float model, figures) to ``updates/rejected/v<base>-<time>/``; keep the
    newest ``keep``."""
    if keep <= 0:
        return None
    rej = updates / "rejected"
    dest = rej / f"v{base}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{m['last_seq']}"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bundle, dest / "bundle", dirs_exist_ok=True)
    if model is not None:
        shutil.copytree(model, dest / "model", dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints"))
    (dest / "metrics.json").write_text(json.dumps(m, indent=1))
    for old in sorted((p for p in rej.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def _run(root, base, model_dir, candidate, candidate_model, steps, strategy, replay, val_classes, lr_scale,
         overrides, ways, episodes, unseen, max_drop, keep_rejected, say, progress, t0) -> dict:
    from metalite.fleet import publish
    from metalite.runtime.bundle import open_bundle

    updates = root.path / "updates"
    work = updates / f"v{base}"
    plan = _plan(root, work, base)
    cfg = _prepare(root, work, plan, model_dir, replay, val_classes, say)
    recipe = release_recipe(open_bundle(work / "current").manifest, overrides)
    float_model = Path(candidate_model) if candidate_model is not None else None
    if candidate is None:
        if "train" not in plan["done"]:
            _fine_tune(work, cfg, steps, strategy, lr_scale, say, progress)
            plan["done"].append("train")
            _save_plan(work, plan)
        candidate = _compress_export(work, cfg, recipe, say, progress)
        float_model = keep_float_model(work, cfg, recipe, plan, work / "release_model")
    m = _evaluate(work, plan, Path(candidate), cfg, ways, episodes, unseen, say)
    m["recipe"] = recipe
    m["float_model"] = "kept with the release" if float_model is not None else \
        "none (gated with --candidate and no --candidate-model): the next update cannot start from this version"
    reason = gate(m, max_drop)
    m["seconds"] = round(time.time() - t0, 1)
    m["figures"] = decision_text(m, max_drop)
    if reason is None:
        r = publish(root, candidate, model_dir=float_model, note=f"fleet update of v{base}", metrics=m)
        m.update(decision="published", version=r["version"], reason="within the thresholds on both measures")
    else:
        m.update(decision="kept", version=base, reason=reason)
        kept = _keep_rejected(updates, base, Path(candidate), float_model, m, keep_rejected)
        m["rejected"] = None if kept is None else str(kept / "bundle")
    shutil.rmtree(work, ignore_errors=True)  # decided: the next update starts afresh with the examples then
    updates.mkdir(exist_ok=True)
    (updates / "last.json").write_text(json.dumps(m, indent=1))
    return m
