"""The gate of a fleet update: candidate against current, both through the device runtime, on (a) the held-out
fleet examples and (b) paired N-way 1-shot episodes on test classes of groups no device sent images of.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fleet_data import _images_by_class, _pixels_digest

MAX_SUPPORT = 20  # support images per fleet class when evaluating (a) through the runtime
UNSEEN_WAYS, UNSEEN_EPISODES = (
    20,
    600,
)  # "no damage": 20-way 1-shot, paired, on classes no one trained on
UNSEEN_CLASSES = 300  # at most this many of them (a seeded draw): every image is embedded (1 + tta) times per bundle


def fleet_holdout_accuracy(bundle, data: Path) -> tuple:
    """(accuracy, images, classes) of ``bundle`` adapted on the fleet's training examples, on the held-out slice."""
    from metalite.runtime import FewShotClassifier

    held = _images_by_class(data / "fleet_holdout")
    support = {
        c: v
        for c, v in _images_by_class(data / "train", MAX_SUPPORT).items()
        if c.startswith("fleet-")
    }
    classes = [c for c in held if c in support]
    if len(classes) < 2:
        return None, 0, len(classes)
    clf = FewShotClassifier(bundle, delegate="cpu").fit({c: support[c] for c in classes})
    x = np.concatenate([held[c] for c in classes])
    y = [c for c in classes for _ in range(len(held[c]))]
    pred = clf.predict(x)
    return float(np.mean([p == t for p, t in zip(pred, y)])), len(y), len(classes)


def original_val_accuracy(bundle, data_spec: str, size: int, episodes: int, seed: int = 0) -> float:
    """5-way 1-shot accuracy of ``bundle`` (int8 backbone through the runtime) on the original validation classes."""
    from metalite.runtime import FewShotClassifier
    from metalite.runtime.head import load_head
    from metalite.training.datasets import load_data
    from metalite.training.evaluate import evaluate_embeddings

    val = load_data(data_spec, size, "val")
    clf = FewShotClassifier(bundle, delegate="cpu")
    emb = np.concatenate(
        [clf.embed(val.images[i : i + 256]) for i in range(0, len(val.images), 256)]
    )
    queries = 5 if min(val.counts()) >= 6 else 1
    return evaluate_embeddings(
        emb, val, load_head(Path(bundle) / "head.npz"), 5, 1, queries, episodes, seed
    )["mean"]


def unseen_classes(
    data_spec: str, size: int, fleet_pixels: set, max_classes: int = UNSEEN_CLASSES, seed: int = 0
):
    """The test split of ``data_spec`` without every group (alphabet) that has an image the fleet sent: classes that
    neither the original training, its validation, nor this update touched; at most ``max_classes`` of them."""
    from metalite.training.datasets import load_data

    test = load_data(data_spec, size, "test")
    touched = {
        test.groups[int(test.labels[i])]
        for i in range(len(test.images))
        if _pixels_digest(test.images[i]) in fleet_pixels
    }
    keep = [c for c in range(test.num_classes) if test.groups[c] not in touched]
    if len(keep) < 2:
        raise ValueError(
            f"{data_spec}: fewer than 2 test classes left outside the {len(touched)} groups the fleet "
            "sent images of; nothing to check for damage on"
        )
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
        embs.append(
            np.concatenate(
                [clf.embed(data.images[i : i + 256]) for i in range(0, len(data.images), 256)]
            )
        )
        heads.append(load_head(Path(b) / "head.npz"))
    sampler = EpisodeSampler(data, ways, 1, queries, seed=seed)
    ys, yq = np.arange(ways), np.repeat(np.arange(ways), queries)
    accs = [[] for _ in bundles]
    for _ in range(episodes):
        s_idx, q_idx = sampler.sample_indices()
        for a, e, h in zip(accs, embs, heads):
            a.append(float((adapt(h, e[s_idx], ys, ways).logits(e[q_idx]).argmax(1) == yq).mean()))
    diff = mean_ci95(np.asarray(accs[1]) - np.asarray(accs[0]))
    return {
        "current": float(np.mean(accs[0])),
        "candidate": float(np.mean(accs[1])),
        "diff": diff[0],
        "ci95": diff[1],
        "ways": ways,
        "shots": 1,
        "queries": queries,
        "episodes": episodes,
        "classes": data.num_classes,
    }


def gate(metrics: dict, max_drop: float = 0.0) -> str | None:
    """Why the candidate must not be published (one line, with the thresholds), or None if it may be.

    Held-out fleet examples: not worse by more than ``max_drop``. Unseen classes: the paired drop must not
    exceed ``max_drop`` plus its 95% CI (a drop the episodes cannot tell from noise is not damage)."""
    v = metrics["fleet_holdout"]
    if v["current"] is None:
        return "cannot compare on the held-out fleet examples (fewer than 2 classes with held-out examples)"
    if v["candidate"] < v["current"] - max_drop - 1e-9:
        return (
            f"candidate is worse on the held-out fleet examples: {100 * v['candidate']:.2f}% < "
            f"{100 * v['current']:.2f}% (allowed drop {100 * max_drop:.2f} pt, {v['images']} images)"
        )
    u = metrics["unseen"]
    if u["diff"] < -(max_drop + u["ci95"]) - 1e-9:
        return (
            f"candidate damages classes no one trained on: {u['ways']}-way 1-shot {100 * u['current']:.2f}% -> "
            f"{100 * u['candidate']:.2f}% (paired {100 * u['diff']:+.2f} pt, allowed -{100 * max_drop:.2f} pt "
            f"- CI {100 * u['ci95']:.2f} pt, {u['episodes']} episodes)"
        )
    return None


def decision_text(m: dict, max_drop: float) -> str:
    """The figures and thresholds of a decision in one line."""
    v, u = m["fleet_holdout"], m["unseen"]
    return (
        f"held-out fleet examples {100 * v['current']:.1f}% -> {100 * v['candidate']:.1f}% ({v['images']} images, "
        f"{v['classes']} classes, allowed drop {100 * max_drop:.2f} pt); unseen {u['ways']}-way 1-shot "
        f"{100 * u['current']:.2f}% -> {100 * u['candidate']:.2f}% (paired {100 * u['diff']:+.2f} "
        f"± {100 * u['ci95']:.2f} pt, {u['episodes']} episodes, allowed -{100 * max_drop:.2f} pt - CI)"
    )
