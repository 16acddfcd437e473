"""``metalite compress`` (workstation; TensorFlow imported inside the command)."""

from __future__ import annotations

import click

from .clikit import console_progress, fail_cleanly, verbose_option


def _sparsity(ctx, param, value):
    if not (0.0 <= value < 1.0):
        raise click.BadParameter(
            f"must be in [0, 1) (fraction of weights set to zero), got {value}"
        )
    return value


def _fractions(ctx, param, value):
    from metalite.training.structured import StructuredError, parse_fractions

    try:
        return parse_fractions(value)
    except StructuredError as e:
        raise click.BadParameter(str(e).replace("--structured ", "")) from None


@click.command("compress")
@click.argument("model", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="compressed model directory to write")
@click.option(
    "--sparsity",
    type=float,
    default=0.5,
    show_default=True,
    callback=_sparsity,
    help="fraction of each conv/dense kernel set to exactly zero (magnitude pruning; 0 skips it). "
    "Makes the file smaller, not faster",
)
@click.option(
    "--structured",
    default="0",
    show_default=True,
    callback=_fractions,
    help="fraction of the filters of every conv layer but the embedding layer removed (or one fraction "
    "per layer, comma-separated): a thinner backbone, faster on every interpreter and the Edge "
    "TPU; composes with --sparsity",
)
@click.option(
    "--structured-score",
    type=click.Choice(["l1", "bn"]),
    default="l1",
    show_default=True,
    help="which filters go: smallest kernel L1 norm (l1, measured better) or BatchNorm |gamma| (bn)",
)
@click.option(
    "--structured-scope",
    type=click.Choice(["layer", "global"]),
    default="layer",
    show_default=True,
    help="layer: the same fraction from every layer; global: one ranking over all layers",
)
@click.option(
    "--structured-steps",
    type=int,
    default=600,
    show_default=True,
    help="episodes of fine-tuning the thinner backbone",
)
@click.option(
    "--structured-multiple",
    type=click.IntRange(1, 1024),
    default=16,
    show_default=True,
    help="round every layer's kept filters to a multiple of this: int8 kernels work in blocks of "
    "channels, so 40 filters run as slowly as 48 (measured with XNNPACK); 1 keeps exact counts",
)
@click.option(
    "--prune-steps",
    type=int,
    default=300,
    show_default=True,
    help="episodes of pruning fine-tuning (sparsity ramps up over the first 2/3)",
)
@click.option(
    "--qat-steps",
    type=int,
    default=150,
    show_default=True,
    help="episodes of pruning-preserving quantization-aware training",
)
@click.option(
    "--no-qat", is_flag=True, help="prune only: write a pruned float model (stage 'pruned')"
)
@click.option(
    "--distill/--no-distill",
    default=False,
    show_default=True,
    help="the float model teaches the compressed one during fine-tuning",
)
@click.option(
    "--distill-loss",
    type=click.Choice(["kl", "mse", "cosine"]),
    default="mse",
    show_default=True,
    help="mse: student embeddings match the float model's (measured best on Omniglot); kl: episode prototype logits at T=4; cosine",
)
@click.option(
    "--distill-shifts",
    type=click.Choice(["0", "4", "8"]),
    default="0",
    show_default=True,
    help="the teacher's target is its embedding averaged over the image and this many one-pixel shifts "
    "(the runtime's tta): a student exported with --tta 0 learns what shift averaging gives",
)
@click.option(
    "--distill-steps",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="episodes of distilled fine-tuning of the float model before pruning and PQAT (needs --distill)",
)
@click.option(
    "--ways", type=int, default=None, help="classes per fine-tuning episode [default: as trained]"
)
@click.option(
    "--shots", type=int, default=None, help="support images per class [default: as trained]"
)
@click.option(
    "--queries", type=int, default=None, help="query images per class [default: as trained]"
)
@click.option(
    "--lr",
    type=float,
    default=None,
    help="fine-tuning learning rate [default: the training lr; PQAT uses 0.3x]",
)
@click.option(
    "--episodes", type=int, default=200, show_default=True, help="evaluation episodes per setting"
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--force", is_flag=True, help="replace an existing model directory at --out")
@verbose_option
@fail_cleanly
def compress_cmd(
    model,
    out,
    sparsity,
    structured,
    structured_score,
    structured_scope,
    structured_steps,
    structured_multiple,
    prune_steps,
    qat_steps,
    no_qat,
    distill,
    distill_loss,
    distill_shifts,
    distill_steps,
    ways,
    shots,
    queries,
    lr,
    episodes,
    seed,
    force,
):
    """Prune MODEL (a float model from `metalite train`) and quantization-aware fine-tune it.

    \b
    0. with --distill-steps N: N episodes of distilled fine-tuning of the float model first;
    1. with --structured F: remove F of the filters of every conv layer (but the embedding layer),
       rebuild a thinner backbone and fine-tune it episodically;
    2. magnitude pruning of every Conv2D/DepthwiseConv2D/Dense kernel to --sparsity, fine-tuned
       episodically with the model's own meta-learning algorithm;
    3. pruning-preserving QAT (int8 fake quantization, zeros kept), fine-tuned the same way.
    Prints and saves OUT/compression_report.json: sparsity of every weight tensor and held-out
    few-shot accuracy after each stage (float, pruned, PQAT, and the converted int8 TFLite).
    Then `metalite export OUT --out BUNDLE`.
    """
    from metalite.training.compress import compress, format_report, plan

    if episodes < 1:
        raise click.BadParameter("must be >= 1", param_hint="--episodes")
    args = dict(
        sparsity=sparsity,
        prune_steps=prune_steps,
        qat_steps=qat_steps,
        qat=not no_qat,
        distill=distill,
        distill_loss=distill_loss,
        ways=ways,
        shots=shots,
        queries=queries,
        lr=lr,
        seed=seed,
        episodes=episodes,
        structured=structured,
        structured_score=structured_score,
        structured_scope=structured_scope,
        structured_steps=structured_steps,
        structured_multiple=structured_multiple,
        overwrite=force,
        distill_shifts=int(distill_shifts),
        distill_steps=distill_steps,
    )
    plan(model, out, **args)  # bad input fails here, before TensorFlow is imported
    report = compress(model, out, progress=console_progress(), **args)
    click.echo(format_report(report))
    click.echo(f"wrote {out} (stage {report['stage']}) in {report['seconds']:.0f}s")


def register(group) -> None:
    group.add_command(compress_cmd)
