"""``metalite export`` and ``metalite inspect`` (workstation). TensorFlow is imported inside the commands only."""

from __future__ import annotations

import json

import click

from .clikit import console_progress, fail_cleanly, verbose_option


@click.command("export")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(), help="bundle directory to create")
@click.option(
    "--edgetpu",
    is_flag=True,
    help="also convert a static batch-1 copy and compile it with edgetpu_compiler if it is on PATH "
    "(if not, the CPU bundle is still written and the reason is printed)",
)
@click.option(
    "--float",
    "float_model",
    is_flag=True,
    help="also write backbone_float.tflite: the same weights in float32, no quantization (for comparison)",
)
@click.option(
    "--representative",
    type=click.IntRange(1, 100000),
    default=200,
    show_default=True,
    help="number of training images used to calibrate int8 activation ranges",
)
@click.option(
    "--data",
    default=None,
    help="dataset for the representative images (default: the one in config.json)",
)
@click.option(
    "--eval-episodes",
    type=click.IntRange(0, 100000),
    default=200,
    show_default=True,
    help="episodes per setting (5/20-way 1-shot) to measure the int8 model's accuracy on held-out "
    "classes, recorded in the manifest; 0 skips",
)
@click.option(
    "--tta",
    type=click.Choice(["0", "4", "8"]),
    default=None,
    help="shifted copies the device averages into every embedding (head.npz adaptation 'tta'; "
    "1 + N backbone runs per image, metalite.runtime.tta) [default: the model's setting, 0 if none]",
)
@click.option(
    "--force",
    is_flag=True,
    help="replace an existing bundle at --out (only once the new one is complete)",
)
@click.option("--quiet", is_flag=True, help="no progress messages")
@verbose_option
@fail_cleanly
def export_cmd(
    model_dir, out, edgetpu, float_model, representative, data, eval_episodes, tta, force, quiet
):
    """Export MODEL_DIR (from `metalite train` or `compress`) as a bundle for the device.

    \b
    The bundle holds backbone.tflite (full-integer int8, any TFLite interpreter, resizable batch),
    head.npz (what the device adapts), edgetpu_report.json (which ops map to a Coral Edge TPU) and
    manifest.json (preprocessing, quantization, training/compression summary, sha256 of each file).
    Written atomically: an interrupted export leaves no bundle behind. Check it with `metalite inspect`.
    """
    from metalite.training.datasets import DataError, load_data, parse_spec, representative_inputs
    from metalite.training.modeldir import read_config

    data_spec = data or read_config(model_dir).get("data", "glyphs")
    parse_spec(data_spec)  # bad input fails here, before TensorFlow is imported
    from metalite.export.bundle import write_bundle
    from metalite.training.modeldir import float_backbone, load_model_dir, meta_from_config

    progress = console_progress(quiet)
    cfg, backbone, head_spec = load_model_dir(model_dir)
    if tta is not None:
        head_spec.adaptation["tta"] = int(tta)
    size, channels = int(cfg["input"]["shape"][0]), int(cfg["input"]["shape"][-1])
    split_seed = int(
        cfg.get("train", {}).get("split_seed", 0)
    )  # the classes held out when it was trained
    try:
        reps = representative_inputs(
            load_data(
                data_spec, size, "train", seed=split_seed, progress=progress, channels=channels
            ),
            representative,
        )
    except DataError as e:
        raise click.ClickException(
            f"representative images: {e} (pass --data to use another dataset)"
        ) from None
    evaluate = (
        _int8_accuracy(data_spec, size, channels, head_spec, eval_episodes, split_seed)
        if eval_episodes
        else None
    )
    path = write_bundle(
        out,
        backbone,
        head_spec,
        reps,
        meta_from_config(cfg),
        edgetpu=edgetpu,
        float_model=float_backbone(cfg, backbone) if float_model else None,
        progress=progress,
        overwrite=force,
        evaluate=evaluate,
    )
    manifest = json.loads((path / "manifest.json").read_text())
    et = manifest["edgetpu"]
    click.echo(f"wrote {path}")
    click.echo(f"Edge TPU: {et['summary']}" + (f"; {et['compiler']['message']}" if edgetpu else ""))


def _int8_accuracy(data_spec, size, channels, head_spec, episodes, split_seed=0):
    """evaluate() for write_bundle: N-way 1-shot accuracy of int8 embeddings on the held-out test classes,
    and Lake-style 20-way 1-shot error where the test alphabets allow it (Omniglot), with the device's
    shift averaging (head.npz ``tta``)."""

    def evaluate(tflite_bytes):
        from metalite.export.tflite import run_int8
        from metalite.runtime.tta import shift_average
        from metalite.training.datasets import (
            HELDOUT_SPLIT,
            describe_split,
            emoji_split,
            load_data,
            parse_spec,
        )
        from metalite.training.evaluate import episode_settings, evaluate_embeddings
        from metalite.training.lake import (
            embedding_classifier,
            lake_alphabets,
            lake_error,
            lake_runs,
        )

        held = load_data(data_spec, size, HELDOUT_SPLIT, seed=split_seed, channels=channels)
        tta = int(head_spec.adaptation.get("tta", 0))
        emb = shift_average(lambda x: run_int8(tflite_bytes, x, batch=64), held.inputs(), tta)
        out = {}
        for ways, shots, queries in episode_settings(held, (5, 20), 1):
            r = evaluate_embeddings(emb, held, head_spec, ways, shots, queries, episodes, seed=0)
            out[f"int8_{ways}way1shot"] = {
                **r,
                "data": describe_split(data_spec, HELDOUT_SPLIT),
                "model": "backbone.tflite",
                "tta": tta,
            }
            if (
                parse_spec(data_spec)[0] == "emoji"
            ):  # the categories held out; queries are other artists'
                out[f"int8_{ways}way1shot"].update(
                    held_out=emoji_split(load_data(data_spec, size, "all").groups),
                    queries_from="other artists (one image per artist and concept)",
                )
        if lake_alphabets(held):
            plan = lake_runs(held, max(episodes, 100), seed=0)
            for key, tr in (("int8_lake", False), ("int8_lake_transductive", True)):
                out[key] = {
                    **lake_error(embedding_classifier(emb, head_spec, transductive=tr), plan),
                    "held_out": _held_out_alphabets(data_spec, size, split_seed),
                    "model": "backbone.tflite",
                    "tta": tta,
                    "protocol": "Lake-style 20-way 1-shot within one held-out alphabet, "
                    "support and query by different drawers (metalite.training.lake)",
                }
        return out

    return evaluate


def _held_out_alphabets(data_spec, size, split_seed=0) -> dict:
    """The alphabets of each split of ``data_spec``: how the Lake-style figures were held out."""
    from metalite.training.datasets import load_data

    return {
        s: sorted(set(load_data(data_spec, size, s, seed=split_seed).groups))
        for s in ("train", "val", "test")
    }


@click.command("inspect")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="print everything as JSON instead of text")
@click.option(
    "--runtime/--no-runtime",
    default=True,
    show_default=True,
    help="also open the backbone with metalite.runtime: which interpreter and delegate run it here, and why",
)
@fail_cleanly
def inspect_cmd(bundle, as_json, runtime):
    """Describe BUNDLE (directory or .zip) and verify it.

    \b
    Shows the manifest in words, file sizes raw and gzip-compressed, the stored sparsity of every
    weight tensor, ops with counts, input/output quantization, Edge TPU readiness, how the runtime
    would run the backbone on this machine, and whether every file matches its sha256. Exits with
    status 1 if a checksum fails.
    """
    from metalite.export.inspect import inspect_bundle, render_text, runtime_check

    info = inspect_bundle(bundle)
    if runtime and info["checksums"]["ok"]:
        info["runtime"] = runtime_check(bundle)
    click.echo(json.dumps(info, indent=2) if as_json else render_text(info))
    if not info["checksums"]["ok"]:
        raise click.ClickException(
            "checksum verification failed: " + "; ".join(info["checksums"]["problems"])
        )


def register(group) -> None:
    """Add ``export`` and ``inspect`` to the ``metalite`` click group."""
    group.add_command(export_cmd)
    group.add_command(inspect_cmd)
