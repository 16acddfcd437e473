"""The data of a fleet update: the fleet's labelled examples de-duplicated by content, a stratified held-out
slice of them for the gate, and a replay sample of the original training classes, as a folder dataset.

    data/train/<class>/*.png      fleet classes (``fleet-NNNN-<label>``) and replayed ones (``orig-NNNNN``)
    data/val/<class>/*.png        original validation classes (model selection while fine-tuning)
    data/fleet_holdout/<class>/   the held-out fleet examples; labels.json: folder -> label; pixels.json
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

HOLDOUT_EVERY = 5  # per class, one distinct image in five is held out for the gate (at least one of two or more)


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
    return hashlib.sha256(
        json.dumps(ex["label"]).encode() + b"|" + _pixels_digest(ex["image"]).encode()
    ).hexdigest()


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

    data.mkdir(
        parents=True, exist_ok=True
    )  # written even when nothing is labelled: the caller says too few
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
    (data / "labels.json").write_text(
        json.dumps({v: json.loads(k) for k, v in slugs.items()}, indent=1)
    )
    (data / "pixels.json").write_text(
        json.dumps(sorted(pixels))
    )  # what the fleet sent: not "unseen" classes
    held_classes = (
        {p.name for p in (data / "fleet_holdout").iterdir()}
        if (data / "fleet_holdout").is_dir()
        else set()
    )
    return {**counts, "classes": len(slugs), "holdout_classes": len(held_classes)}


def write_replay(
    data_spec: str, size: int, data: Path, replay: int, val_classes: int, seed: int = 0
) -> dict:
    """A replay sample of the original training classes into ``data/train`` and validation classes into ``data/val``."""
    from metalite.training.datasets import load_data

    out = {}
    for split, sub, n in (("train", "train", replay), ("val", "val", val_classes)):
        ds = load_data(data_spec, size, split)
        pick = np.random.default_rng(seed).permutation(ds.num_classes)[:n]
        for c in pick:
            for j, i in enumerate(ds.indices_of(int(c))):
                _save_png(data / sub / f"orig-{int(c):05d}" / f"{j:04d}.png", ds.images[i])
        out[split] = len(pick)
    return out


def _images_by_class(folder: Path, limit: int | None = None) -> dict:
    """{class folder: uint8 (N, H, W) or (N, H, W, 3) images as written} of a data folder (empty if missing)."""
    from PIL import Image

    from metalite.runtime.folders import class_folders

    if not folder.is_dir():
        return {}
    return {
        name: np.stack([np.asarray(Image.open(f)) for f in files[:limit]])
        for name, files in class_folders(folder)
        if files
    }
