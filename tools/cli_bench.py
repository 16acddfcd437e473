"""``metalite bench`` (workstation). TensorFlow is imported inside the command only."""
from __future__ import annotations

import click

from .clikit import fail_cleanly, verbose_option


@click.command("bench")
@click.argument("bundle", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="directory for report.json, report.md, plots")
@click.option("--quick", is_flag=True, help="fewer episodes, runs and settings: a few minutes, for CI")
@click.option("--model", "models", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="model directory of the bundle (float stage: float Keras/TFLite and unpruned int8 variants; "
                   "pruned stage: pruned float); repeatable. Without it those variants are skipped with a note")
@click.option("--data", default=None, help="dataset spec to evaluate on (its held-out test classes; default: the "
              "built-in glyphs when the bundle was trained on them, else required)")
@click.option("--readme-section", "readme", type=click.Path(exists=True, dir_okay=False), default=None,
              help="instead of benchmarking, rewrite the bench section of this README from BUNDLE/report.json "
                   "(BUNDLE is then a bench output directory or report.json)")
@verbose_option
@fail_cleanly
def bench_cmd(bundle, out, quick, models, data, readme):
    """Benchmark BUNDLE on this machine: accuracy, size, latency, adaptation, memory.

    \b
    Writes OUT/report.json, OUT/report.md and PNG plots. Sections: machine, accuracy (N-way K-shot on the
    held-out classes of the bundle's dataset, every backbone variant, same head-only adaptation), size,
    latency (per interpreter, batch 1/32, 1/2 threads, float Keras as desktop reference), adaptation
    (metalite vs TFLite on-device training, Keras fine-tuning, pycoral-style SGD) and memory (peak RSS of
    a runtime-only process).
    \b
    Example:
      metalite bench models/omniglot --data omniglot:small1.zip,small2.zip --out benchmarks/reference
    """
    from pathlib import Path

    if readme:
        from .readme_bench import update_readme

        src = Path(bundle)
        report = src / "report.json" if src.is_dir() else src
        try:
            changed = update_readme(readme, report)
        except (ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"{readme}: {'updated' if changed else 'up to date'}")
        return

    from .bench import run_bench

    report = run_bench(bundle, out, quick=quick, model_dirs=models, data_spec=data)
    h = report["headline"]
    click.echo(f"wrote {Path(out) / 'report.md'}")
    if h.get("keras_over_int8_latency_b1"):
        click.echo(f"int8 vs float Keras latency (batch 1): {h['keras_over_int8_latency_b1']:.1f}x faster")
    if h.get("float_tflite_over_int8_size"):
        click.echo(f"int8 vs float TFLite size: {h['float_tflite_over_int8_size']:.1f}x smaller")


def register(group) -> None:
    group.add_command(bench_cmd)
