"""The ``accuracy`` section of ``metalite bench``: N-way K-shot accuracy of every variant on held-out classes.

Embeddings are computed once per variant; every episode adapts the bundle's head with
``metalite.runtime.head.adapt`` (as the device does), the same episodes for every variant.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from metalite.training.datasets import (
    HELDOUT_SPLIT,  # the classes (alphabets) no training stage saw
)

from .fields import get
from .plots import save
from .variants import label


def data_name(spec: str) -> str:
    """Short name of a data spec for titles: 'omniglot (images_background_small1, ...small2)'."""
    kind, _, rest = (spec or "").partition(":")
    files = [Path(p).name.rsplit(".", 1)[0] for p in rest.split(",") if p]
    return f"{kind} ({', '.join(files)})" if files else kind


def is_heldout(data_spec: str, training_spec: str | None) -> bool:
    """True when ``data_spec`` is the bundle's own training data, so its ``test`` split was held out of training;
    the test split of other data may share classes with the training data (both small Omniglot sets hold Latin)."""
    from metalite.training.datasets import portable_spec

    return bool(training_spec) and portable_spec(data_spec) == portable_spec(training_spec)


def split_phrase(acc: dict) -> str:
    """How a report names the classes it measured on: held-out ones only when they were."""
    if acc.get("heldout", True):
        return f"held-out `{acc.get('split')}` classes of {acc.get('data_name')}"
    return (
        f"`{acc.get('split')}` classes of {acc.get('data_name')}, not the training data "
        f"({data_name(acc.get('training_data') or '')}), so not necessarily unseen in training"
    )


def load_heldout(spec: str, size: int):
    """The held-out test classes of ``spec`` (``datasets.HELDOUT_SPLIT``), as every measurement uses."""
    from metalite.training.datasets import load_data

    return load_data(spec, size, HELDOUT_SPLIT)


def _settings(data, cfg) -> tuple:
    """([(ways, shots, within alphabet)], notes) for the held-out data."""
    settings = [(w, s, False) for w, s in cfg["configs"]]
    groups = sorted(set(data.groups))
    notes = []
    if data.spec.startswith("omniglot") and cfg["within"]:
        if len(groups) > 1:
            settings += [(w, s, True) for w, s in cfg["configs"]]
        else:
            notes.append(
                f"all held-out classes are from one alphabet ({groups[0]}): the episodes are "
                "within-alphabet episodes, so no separate within-alphabet rows"
            )
    return settings, notes


def embed_fn(variant, threads: int = 2):
    """Batch embedding function of a variant (Keras model or .tflite through the runtime's embedder)."""
    if variant.keras is not None:
        from metalite.training.evaluate import keras_embed_fn

        return keras_embed_fn(variant.keras)
    from metalite.runtime.embedder import Embedder
    from metalite.runtime.interpreter import get_backend, make_interpreter

    return Embedder(
        make_interpreter(variant.path, threads, None, get_backend()),
        max_batch=64,
        name=Path(variant.path).name,
    )


def accuracy_section(variants, data, spec, cfg, seed=0, say=print) -> dict:
    from metalite.training.datasets import DataError
    from metalite.training.evaluate import embed_all, evaluate_embeddings

    settings, notes = _settings(data, cfg)
    sec = {
        "notes": notes,
        "groups": len(set(data.groups)),
        "data": data.spec,
        "data_name": data_name(data.spec),
        "split": HELDOUT_SPLIT,
        "classes": data.num_classes,
        "images": int(len(data.images)),
        "episodes": cfg["episodes"],
        "queries": 15,
        "seed": seed,
        "adaptation": "runtime.head.adapt with the bundle's head and settings (embeddings computed once per variant)",
        "results": {},
        "skipped": {},
    }
    for key, v in variants.items():
        say(f"accuracy: embedding {len(data.images)} images with {v.label}")
        emb = embed_all(embed_fn(v), data, batch=64)
        res = {}
        for ways, shots, within in settings:
            name = f"{ways}way{shots}shot" + ("_within" if within else "")
            queries = min(15, int(data.counts().max()) - shots)
            try:
                res[name] = evaluate_embeddings(
                    emb,
                    data,
                    spec,
                    ways,
                    shots,
                    queries=queries,
                    episodes=cfg["episodes"],
                    seed=seed,
                    within_group=within,
                )
            except DataError as e:
                sec["skipped"][name] = str(e)
        sec["results"][key] = res
    return sec


# ----------------------------------------------------------------------------- headline, report.md, plot, README rows
def accuracy_headline(h, report, ship) -> None:
    """The headline's 5-way and 20-way 1-shot accuracies of the shipped variant and the baselines."""
    acc = get(report, "accuracy", "results") or {}
    for v in (ship, "float_keras", "float_tflite", "int8_tflite"):
        for key in ("5way1shot", "20way1shot"):
            m = get(acc, v, key, "mean")
            if m is not None:
                h[f"acc_{v}_{key}"] = m


def accuracy_lines(report, plot_files) -> list:
    acc = report.get("accuracy", {})
    L = [
        "## accuracy",
        "",
        f"{acc.get('episodes')} episodes per setting, {acc.get('queries')} queries per class, {split_phrase(acc)} "
        f"({acc.get('classes')} classes, {acc.get('images')} images); {acc.get('adaptation')}. Mean ± 95% CI.",
        "",
    ]
    keys = sorted({k for r in (acc.get("results") or {}).values() for k in r})
    if keys:
        L += ["| variant | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for v, res in acc["results"].items():
            L.append(
                f"| {label(report, v)} | "
                + " | ".join(
                    f"{res[k]['mean']:.3f} ± {res[k]['ci95']:.3f}" if k in res else "n/a"
                    for k in keys
                )
                + " |"
            )
    L += [f"\n- note: {n}" for n in acc.get("notes") or []]
    L += [f"\n- {k} skipped: {why}" for k, why in (acc.get("skipped") or {}).items()]
    return L + ([f"\n![accuracy]({plot_files['accuracy']})"] if "accuracy" in plot_files else [])


def accuracy_plot(plt, report, path) -> bool:
    acc = get(report, "accuracy", "results") or {}
    if not acc:
        return False
    keys = sorted({k for r in acc.values() for k in r})
    fig, ax = plt.subplots(figsize=(max(6.5, 1.4 * len(keys)), 4.4))
    w = 0.8 / max(1, len(acc))
    for i, (v, res) in enumerate(acc.items()):
        xs = [j + i * w for j, k in enumerate(keys) if k in res]
        ax.bar(
            xs,
            [res[k]["mean"] for k in keys if k in res],
            w,
            yerr=[res[k]["ci95"] for k in keys if k in res],
            label=label(report, v),
            capsize=2,
        )
    ax.set_xticks(
        [j + w * (len(acc) - 1) / 2 for j in range(len(keys))], keys, rotation=20, fontsize=8
    )
    ax.set_ylabel("accuracy (mean, 95% CI)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    a = report.get("accuracy") or {}
    ax.set_title(
        textwrap.fill(f"Held-out accuracy: {a.get('data_name')}, {a.get('split')} classes", 70),
        fontsize=9,
    )
    save(plt, fig, path)
    return True


def accuracy_readme_rows(report, h) -> list:
    """The README's accuracy rows: the shipped backbone against the float model."""
    rows = []
    acc, ship = get(report, "accuracy", "results") or {}, h.get("shipped_variant")
    for key in ("5way1shot", "20way1shot"):
        a, fl = get(acc, ship, key), get(acc, "float_keras", key) or get(acc, "float_tflite", key)
        if a and fl:
            which = (
                "held-out"
                if get(report, "accuracy", "heldout") in (None, True)
                else "test split of other data"
            )
            rows.append(
                (
                    f"Accuracy {key} ({which})",
                    f"{a['mean']:.3f} ± {a['ci95']:.3f}",
                    f"{fl['mean']:.3f} ± {fl['ci95']:.3f} (float)",
                    f"{(a['mean'] - fl['mean']) * 100:+.1f} pts",
                )
            )
    return rows
