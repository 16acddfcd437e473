"""``metalite train`` and ``metalite evaluate`` (workstation; TensorFlow imported inside the commands)."""

from __future__ import annotations

import json

import click

from metalite.training.settings import (
    ALGORITHMS,
    BACKBONES,
    MAX_DEFAULT_WAYS,
    POOLS,
    STRATEGIES,
    TrainSettings,
)

from .clikit import console_progress, fail_cleanly, plural, verbose_option

TRAIN = (
    TrainSettings()
)  # the run's defaults and choices: --help shows them, the trainer applies them

DATA_HELP = (
    "dataset: 'glyphs' (built in, no download), 'omniglot:PATH[,PATH]' (Omniglot folders or "
    "zips: alphabet/character/*.png), 'folder:PATH' (class_name/*.png|jpg; colour if the images have "
    "colour), 'emoji:PATH' (category/concept/*.png, built by scripts/fetch_emoji.py; colour) or 'digits' "
    "(scikit-learn's handwritten digits, a cross-domain check; needs scikit-learn)"
)


@click.command("train")
@click.option("--data", default=TRAIN.data, show_default=True, help=DATA_HELP)
@click.option(
    "--algorithm",
    type=click.Choice(ALGORITHMS),
    default=TRAIN.algorithm,
    show_default=True,
    help="meta-learner",
)
@click.option(
    "--backbone",
    type=click.Choice(BACKBONES),
    default=TRAIN.backbone["kind"],
    show_default=True,
    help="conv4: 4x[conv3x3-BN-ReLU-maxpool]; dsconv: depthwise-separable, maps fully onto the Edge TPU",
)
@click.option(
    "--filters",
    type=int,
    default=TRAIN.backbone["filters"],
    show_default=True,
    help="channels of the backbone's blocks",
)
@click.option(
    "--embedding-dim",
    type=int,
    default=TRAIN.backbone["embedding_dim"],
    show_default=True,
    help="size of the embedding",
)
@click.option(
    "--pool",
    type=click.Choice(POOLS),
    default=TRAIN.backbone.get("pool", "valid"),
    show_default=True,
    help="conv4's max-pool padding: valid is the classic network (at 28 px it drops the last row and "
    "column of odd maps, so the embedding sees part of the last map); same keeps them and averages "
    "the last map",
)
@click.option(
    "--head-hidden",
    default=",".join(map(str, TRAIN.head["hidden"])),
    show_default=True,
    help="comma-separated widths of the head's Dense layers (the part the device adapts); '' for none",
)
@click.option(
    "--image-size",
    type=int,
    default=TRAIN.image_size,
    show_default=True,
    help="square input size in pixels",
)
@click.option(
    "--ways",
    type=int,
    default=None,
    help=f"classes per training episode [default: {MAX_DEFAULT_WAYS}, or as many as the training classes "
    "allow]",
)
@click.option(
    "--shots", type=int, default=TRAIN.shots, show_default=True, help="support images per class"
)
@click.option(
    "--queries", type=int, default=None, help=f"query images per class [default: {TRAIN.queries}]"
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help=f"meta-training steps (episodes) [default: {TRAIN.steps}, about 25-40 minutes on 2 cores at 28 px]",
)
@click.option(
    "--lr", type=float, default=None, help="outer learning rate (Reptile: epsilon) [per algorithm]"
)
@click.option(
    "--inner-steps",
    type=int,
    default=None,
    help="inner-loop / device adaptation steps [per algorithm]",
)
@click.option(
    "--inner-lr", type=float, default=None, help="inner-loop / device adaptation learning rate"
)
@click.option(
    "--rotations/--no-rotations",
    default=None,
    help="add 90/180/270-degree rotations as new classes [default: on for omniglot: data]",
)
@click.option(
    "--within-alphabet",
    type=click.FloatRange(0, 1),
    default=None,
    is_flag=False,
    flag_value=1.0,
    help="fraction of episodes whose classes all come from one alphabet/group (hard episodes; the "
    f"bare flag means 1) [default: {TRAIN.within_alphabet:g}]",
)
@click.option(
    "--augment",
    default=None,
    metavar="SPEC",
    help="distort every training image: 'none', or strengths 'shift=PX,rotate=DEG,scale=F,shear=F,stroke=F' "
    "(each drawn per image in [-max, max]); colour data also hue=DEG,saturation=F,brightness=F,"
    "background=F [default: shift=2,rotate=10,scale=0.1,shear=0.2,stroke=0.5]",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    default=None,
    help="model input: 1 (gray) or 3 (RGB) [default: as the data has them]",
)
@click.option(
    "--val-every",
    type=int,
    default=None,
    help=f"validate on held-out classes every N steps [default: {TRAIN.val_every}]",
)
@click.option(
    "--checkpoint-every",
    type=int,
    default=None,
    help=f"checkpoint every N steps [default: {TRAIN.checkpoint_every}]",
)
@click.option("--seed", type=int, default=TRAIN.seed, show_default=True)
@click.option(
    "--split-seed",
    type=int,
    default=None,
    help="which classes (Omniglot: alphabets) are held out for validation and test: another seed holds "
    f"out others, for a fold check of a recipe; evaluate follows the model's split "
    f"[default: {TRAIN.split_seed}]",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default=None,
    help="default: one device; mirrored: all local devices; multiworker: the machines in TF_CONFIG "
    "(protonet/anil; one episode per replica per step; docs/distributed.md) "
    f"[default: {TRAIN.strategy}]",
)
@click.option(
    "--init",
    "init",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="start from the weights of this float model directory (same backbone and head) instead of "
    "random ones: a warm restart with a new learning-rate cosine, or fine-tuning on new data",
)
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="model directory to write"
)
@click.option(
    "--force",
    is_flag=True,
    help="replace an existing model directory at --out (removed when training starts)",
)
@verbose_option
@fail_cleanly
def train_cmd(
    data,
    algorithm,
    backbone,
    filters,
    embedding_dim,
    pool,
    head_hidden,
    image_size,
    ways,
    shots,
    queries,
    steps,
    lr,
    inner_steps,
    inner_lr,
    rotations,
    within_alphabet,
    augment,
    channels,
    val_every,
    checkpoint_every,
    seed,
    split_seed,
    strategy,
    init,
    resume,
    out,
    force,
):
    """Meta-train a few-shot learner episodically and write a model directory.

    The directory keeps its config (algorithm, data, shapes, seed, versions) so later steps need no
    flags repeated. It is rewritten whenever held-out validation accuracy improves; checkpoints
    go to OUT/checkpoints. Ctrl-C saves a checkpoint; --resume continues.

    \b
    Example:
      metalite train --data omniglot:images_background_small1.zip --algorithm protonet \\
          --steps 300 --ways 20 --shots 1 --out runs/proto
    """
    from metalite.training import settings as run_settings

    hparams = {
        k: v
        for k, v in {"lr": lr, "inner_steps": inner_steps, "inner_lr": inner_lr}.items()
        if v is not None
    }
    hidden = [int(u) for u in head_hidden.split(",") if u.strip()]
    settings = {
        "data": data,
        "algorithm": algorithm,
        "image_size": image_size,
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "steps": steps,
        "seed": seed,
        "rotations": rotations,
        "within_alphabet": within_alphabet,
        "augment": _parse_augment(augment),
        "hparams": hparams,
        "channels": None if channels is None else int(channels),
        "val_every": val_every,
        "checkpoint_every": checkpoint_every,
        "strategy": strategy,
        "split_seed": split_seed,
        "init": init,
        "backbone": {
            "kind": backbone,
            "filters": filters,
            "embedding_dim": embedding_dim,
            **({"pool": pool} if backbone == "conv4" and pool != "valid" else {}),
        },
        "head": {"hidden": hidden, "activation": "linear"},
    }
    if resume:
        settings = {"steps": steps, "strategy": strategy}
    run_settings.check_out(
        out, resume, force
    )  # bad input fails here, before TensorFlow is imported
    s = run_settings.resolve(out, settings, resume)
    if not resume:
        from metalite.training.datasets import check_folder_fits

        check_folder_fits(s.data, s.ways, s.shots, s.queries, s.val_shots)
        _tell_data_kind(s.data, s.image_size, picked=augment is None, channels=s.channels)
    from metalite.training.trainer import train

    cfg = train(out, s, resume=resume, progress=console_progress(), overwrite=force)
    val = (cfg.get("metrics") or {}).get("val") or {}
    if val:
        click.echo(
            f"saved {out}: best validation {val['ways']}-way {val['shots']}-shot "
            f"{100 * val['mean']:.2f}% ± {100 * val['ci95']:.2f} (step {cfg['metrics']['step']})"
        )


def _tell_data_kind(data_spec, image_size, picked: bool, channels=None) -> None:
    """What a folder: dataset looks like and the augmentation picked for it; warnings for dropped colour and
    images much larger than the input (stderr)."""
    from metalite.training.datakind import survey
    from metalite.training.datasets import parse_spec

    kind, paths = parse_spec(data_spec)
    found = survey(paths[0]) if kind == "folder" else None
    if found is None:
        return
    if picked:
        click.echo(f"data {data_spec}: {found.describe(image_size)}", err=True)
    for w in found.warnings(image_size, channels):
        click.echo(f"warning: {w}", err=True)


def _parse_augment(text):
    """'none' | 'k=v,...' -> dict of augmentation strengths (None when not given: the default)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return {}
    from metalite.training.augment import NONE

    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, val = part.partition("=")
        if not sep or key not in NONE:
            raise click.BadParameter(
                f"{part!r}: expected KEY=NUMBER with KEY one of {', '.join(NONE)}",
                param_hint="--augment",
            )
        try:
            out[key] = float(val)
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: {val!r} is not a number", param_hint="--augment"
            ) from None
    return out


@click.command("evaluate")
@click.argument("model", type=click.Path())
@click.option(
    "--protocol",
    type=click.Choice(["episodes", "lake"]),
    default="episodes",
    show_default=True,
    help="episodes: N-way K-shot accuracy over random episodes; lake: Lake et al.'s 20-way 1-shot runs "
    "(20 characters of one held-out alphabet, support and query drawn by different people), error",
)
@click.option("--data", default=None, help=DATA_HELP + " [default: the model's training data]")
@click.option(
    "--split",
    type=click.Choice(["auto", "train", "val", "test", "all"]),
    default="auto",
    show_default=True,
    help="classes to test on; auto = held-out test classes of the training data, or all classes of other data",
)
@click.option(
    "--ways", type=int, default=5, show_default=True, help="episodes: classes per episode"
)
@click.option(
    "--shots", type=int, default=1, show_default=True, help="episodes: support images per class"
)
@click.option(
    "--queries", type=int, default=15, show_default=True, help="episodes: query images per class"
)
@click.option("--episodes", type=int, default=600, show_default=True, help="episodes: how many")
@click.option(
    "--runs",
    type=click.IntRange(1, 100000),
    default=400,
    show_default=True,
    help="lake: how many runs",
)
@click.option(
    "--within-alphabet", is_flag=True, help="episodes: all classes of an episode from one alphabet"
)
@click.option(
    "--adapt-steps",
    type=int,
    default=None,
    help="override the head's adaptation steps (model directory)",
)
@click.option(
    "--tta",
    type=click.Choice(["0", "4", "8"]),
    default=None,
    help="shifted copies averaged into each embedding, as the device does (metalite.runtime.tta) "
    "[default: the head's setting]",
)
@click.option(
    "--transductive",
    is_flag=True,
    help="lake: refine the prototypes over each run's 20 queries (opt-in on the device too)",
)
@click.option(
    "--pairing",
    type=click.Choice(["character", "run"]),
    default="character",
    show_default=True,
    help="lake: draw the support and query drawers for each character, or once per run (one person "
    "drew every support image, another every query, as in Lake's 20 official runs)",
)
@click.option(
    "--pixel-baseline",
    is_flag=True,
    help="also score nearest neighbour on the raw input pixels on the same runs or episodes",
)
@click.option(
    "--open-set",
    is_flag=True,
    help="episodes: add as many queries of classes outside the support set as known ones; report AUROC "
    "known-vs-unknown, known-class accuracy at the operating point, unknowns refused (docs/open_set.md)",
)
@click.option(
    "--unknown",
    "unknown_rate",
    type=click.FloatRange(0, 0.5, min_open=True),
    default=None,
    help="open set: target false-rejection rate of the threshold [0.01, as unknown='auto' on the device]",
)
@click.option(
    "--skip-alphabet",
    "skip_groups",
    multiple=True,
    metavar="NAME",
    help="leave out the classes of this alphabet (group), e.g. ones the model was trained on. Repeatable.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@verbose_option
@fail_cleanly
def evaluate_cmd(
    model,
    protocol,
    data,
    split,
    ways,
    shots,
    queries,
    episodes,
    runs,
    within_alphabet,
    adapt_steps,
    tta,
    transductive,
    pairing,
    pixel_baseline,
    open_set,
    unknown_rate,
    skip_groups,
    seed,
    as_json,
):
    """Few-shot accuracy (or Lake-style error) of MODEL with its 95% confidence interval.

    MODEL is a model directory (from train/compress; its Keras backbone runs in TensorFlow) or a bundle
    (from export; run by the device runtime, int8, exactly as on the device). Either way the head adapts
    the way the device does: frozen backbone, head-only adaptation on the support set.

    Lake-style results give the mean error over runs with its 95% CI, each alphabet's error and the
    worst alphabet; --pixel-baseline adds a raw-pixel nearest neighbour scored on the same runs/episodes.

    \b
    Examples:
      metalite evaluate runs/proto --ways 20 --shots 1
      metalite evaluate models/omniglot --protocol lake --data omniglot:PATH/images_background.zip
      metalite evaluate models/omniglot --data digits --ways 10 --shots 1 --pixel-baseline
      metalite evaluate models/omniglot --open-set --shots 5 --queries 5 --data omniglot:images_background.zip
    """
    from pathlib import Path

    from metalite.training.datasets import HELDOUT_SPLIT, load_data, parse_spec, portable_spec

    if data:
        parse_spec(data)  # a bad --data fails before any model is loaded
    if open_set and protocol != "episodes":
        raise click.UsageError("--open-set works with --protocol episodes")
    is_bundle = (Path(model) / "manifest.json").exists() or str(model).endswith(".zip")
    tta = None if tta is None else int(tta)
    source = _bundle_source(model, tta) if is_bundle else _model_dir_source(model, adapt_steps, tta)
    data = data or default_data(model, source["data"], is_bundle)
    if split == "auto":  # the held-out classes of the training data, every class of other data
        split = HELDOUT_SPLIT if portable_spec(data) == portable_spec(source["data"]) else "all"
    progress = console_progress()
    ds = load_data(
        data,
        source["size"],
        split,
        seed=source["split_seed"],
        progress=progress,
        channels=source["channels"],
    )
    if skip_groups:
        ds = _skip_groups(ds, skip_groups)
    if (
        protocol == "episodes" and not open_set
    ):  # before embedding every image: can the classes fill them at all?
        from metalite.training.episodes import check_episode_fits

        check_episode_fits(ds, ways, shots, queries, within_alphabet)
    if protocol == "lake":
        res, text = _lake(source, ds, runs, seed, transductive, pairing, pixel_baseline, progress)
        text = (
            f"Lake-style 20-way 1-shot on {data} [{split}, drawers paired per {pairing}]: "
            + text
            + f" ({runs} runs; {source['what']}{', transductive' if transductive else ''})"
        )
    elif open_set:
        from metalite.runtime.openset import DEFAULT_RATE
        from metalite.training.evaluate import evaluate_open_set

        emb = source["embed_all"](ds)
        with progress.task(f"open-set {ways}-way {shots}-shot", episodes) as task:
            res = evaluate_open_set(
                emb,
                ds,
                source["head_spec"],
                ways,
                shots,
                queries,
                episodes,
                seed,
                unknown_rate or DEFAULT_RATE,
                within_alphabet,
                adapt_steps,
                task.advance,
            )
        text = _open_set_text(res, f"{data} [{split}, {ds.num_classes} classes]", source["what"])
    else:
        res, text = _episodes(
            source,
            ds,
            ways,
            shots,
            queries,
            episodes,
            seed,
            within_alphabet,
            adapt_steps,
            pixel_baseline,
            progress,
        )
        text = (
            f"{ways}-way {shots}-shot on {data} [{split}, {plural(ds.num_classes, 'class')}"
            f"{', within alphabet' if within_alphabet else ''}]: {text} ({episodes} episodes; {source['what']})"
        )
    if skip_groups:
        res["skipped_alphabets"] = list(skip_groups)
    res.update(
        {
            "model": str(model),
            "data": data,
            "split": split,
            "classes": ds.num_classes,
            "measured": source["what"],
            "tta": source["tta"],
            "transductive": transductive and protocol == "lake",
        }
    )
    click.echo(json.dumps(res, indent=2) if as_json else text)


def _skip_groups(ds, names):
    """``ds`` without the classes of the groups (alphabets) ``names``; a name matching no group is an error."""
    missing = sorted(set(names) - set(ds.groups))
    if missing:
        raise click.BadParameter(
            f"no alphabet {missing[0]!r} in these classes (they have: "
            f"{', '.join(sorted(set(ds.groups)))})",
            param_hint="--skip-alphabet",
        )
    keep = [c for c in range(ds.num_classes) if ds.groups[c] not in set(names)]
    if not keep:
        raise click.BadParameter("it leaves no classes", param_hint="--skip-alphabet")
    out = ds.subset(keep)
    out.spec = ds.spec
    return out


def _open_set_text(res: dict, where: str, what: str) -> str:
    """The open-set result in a few lines."""

    def pc(k):
        return f"{100 * res[k]['mean']:.2f}% ± {100 * res[k]['ci95']:.2f}"

    rules = ", ".join(f"{k} {v}" for k, v in sorted(res["rules"].items()))
    return (
        f"open-set {res['ways']}-way {res['shots']}-shot on {where}, {res['queries']} known + {res['queries']} "
        f"unknown queries per class, {res['episodes']} episodes ({what}):\n"
        f"  AUROC known vs unknown     {res['auroc']['mean']:.4f} ± {res['auroc']['ci95']:.4f}\n"
        f"  closed-set accuracy        {pc('closed_accuracy')}\n"
        f"  known-class accuracy       {pc('known_accuracy')} at target false rejection "
        f"{100 * res['rate']:g}% (threshold rule: {rules})\n"
        f"  known images refused       {pc('false_rejection')}\n"
        f"  unknown images refused     {pc('unknown_rejected')}"
    )


def default_data(model, recorded, is_bundle: bool) -> str:
    """The data to evaluate ``model`` on without --data: a model directory's own training data; for a bundle
    only the built-in glyphs (its manifest records file names, not paths: ``datasets.portable_spec``)."""
    from metalite.training.datasets import spec_with_dirs

    if not recorded:
        raise click.ClickException(f"{model}: records no training data; pass --data")
    if is_bundle and recorded.strip() != "glyphs":
        raise click.ClickException(
            f"{model} was trained on {recorded}; pass --data {spec_with_dirs(recorded)} "
            "with where those files are on this machine"
        )
    return recorded


def _model_dir_source(model, adapt_steps, tta):
    """How to embed and adapt with a model directory (Keras backbone in TensorFlow)."""
    from metalite.runtime.tta import shift_average
    from metalite.training.evaluate import embed_all, keras_embed_fn
    from metalite.training.lake import embedding_classifier
    from metalite.training.modeldir import load_model_dir

    cfg, backbone, head_spec = load_model_dir(model)
    tta = int(head_spec.adaptation.get("tta", 0)) if tta is None else tta
    keras = keras_embed_fn(backbone)
    embed = lambda ds: embed_all(lambda x: shift_average(keras, x, tta), ds)  # noqa: E731
    return {
        "data": cfg["data"],
        "size": int(cfg["input"]["shape"][0]),
        "channels": int(cfg["input"]["shape"][-1]),
        "head_spec": head_spec,
        "tta": tta,
        "split_seed": int(cfg.get("train", {}).get("split_seed", 0)),
        "what": f"Keras model, stage {cfg.get('stage', 'float')}",
        "embed_all": embed,
        "lake_classify": lambda ds, tr: embedding_classifier(embed(ds), head_spec, adapt_steps, tr),
    }


def _bundle_source(model, tta):
    """How to embed and adapt with a bundle: the device runtime's FewShotClassifier."""
    from metalite.runtime import FewShotClassifier
    from metalite.training.lake import runtime_classifier

    clf = FewShotClassifier(model, num_threads=1, delegate="cpu", cache_size=100000, tta=tta)
    training = clf.bundle.manifest.get("training", {})
    return {
        "data": training.get("data"),
        "size": int(clf.bundle.input_shape[0]),
        "channels": int(clf.bundle.input_shape[2]),
        "head_spec": clf.head_spec,
        "split_seed": int(training.get("split_seed", 0)),
        "tta": clf.tta,
        "what": f"int8 bundle through the runtime ({clf.backend})",
        "embed_all": lambda ds: clf.embed(ds.images),
        "lake_classify": lambda ds, tr: runtime_classifier(clf, ds.images, tr),
    }


def _lake(source, ds, runs, seed, transductive, pairing, pixel_baseline, progress):
    """(result, one-line summary) of Lake-style runs, with the raw-pixel baseline on the same runs if asked."""
    from metalite.training.evaluate import nearest_neighbour, pixel_features
    from metalite.training.lake import lake_error, lake_runs

    plan = lake_runs(ds, runs, seed=seed, pairing=pairing)
    classify = source["lake_classify"](ds, transductive)
    with progress.task("Lake runs", runs) as task:
        res = lake_error(classify, plan, progress=task.advance)
    res["pairing"] = pairing
    text = _lake_text(res)
    if pixel_baseline:
        feats = pixel_features(ds)
        res["pixel_baseline"] = lake_error(
            lambda s, y, q: nearest_neighbour(feats[s], y, feats[q]), plan
        )
        text += (
            f"; raw-pixel nearest neighbour on the same runs: {_lake_text(res['pixel_baseline'])}"
        )
    return res, text


def _lake_text(res) -> str:
    per = ", ".join(f"{g} {100 * e:.1f}" for g, e in res["alphabets"].items())
    return (
        f"error {100 * res['error']:.2f}% ± {100 * res['ci95']:.2f} (95% CI over runs); over "
        f"{len(res['alphabets'])} alphabets mean {100 * res['alphabet_mean']:.2f}, sd {100 * res['alphabet_sd']:.2f}, "
        f"worst {res['worst_alphabet']} {100 * res['worst_error']:.2f} [{per}]"
    )


def _episodes(
    source,
    ds,
    ways,
    shots,
    queries,
    episodes,
    seed,
    within_alphabet,
    adapt_steps,
    pixel_baseline,
    progress,
):
    """(result, one-line summary) of N-way K-shot episodes, with the raw-pixel baseline on the same episodes."""
    from metalite.training.evaluate import evaluate_embeddings, nearest_neighbour, pixel_features

    emb = source["embed_all"](ds)
    with progress.task(f"{ways}-way {shots}-shot", episodes) as task:
        res = evaluate_embeddings(
            emb,
            ds,
            source["head_spec"],
            ways,
            shots,
            queries,
            episodes,
            seed,
            within_alphabet,
            steps=adapt_steps,
            progress=task.advance,
        )
    text = f"{100 * res['mean']:.2f}% ± {100 * res['ci95']:.2f} (95% CI)"
    if pixel_baseline:
        res["pixel_baseline"] = evaluate_embeddings(
            pixel_features(ds),
            ds,
            None,
            ways,
            shots,
            queries,
            episodes,
            seed,
            within_alphabet,
            classify=nearest_neighbour,
        )
        b = res["pixel_baseline"]
        text += f"; raw-pixel nearest neighbour on the same episodes {100 * b['mean']:.2f}% ± {100 * b['ci95']:.2f}"
    return res, text


def register(group):
    group.add_command(train_cmd)
    group.add_command(evaluate_cmd)
