"""``metalite bench`` (workstation). TensorFlow is imported inside the command only."""

from __future__ import annotations

import click

from .clikit import fail_cleanly, verbose_option


@click.command("bench")
@click.argument("bundle", type=click.Path(exists=True))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="directory for report.json, report.md, plots",
)
@click.option(
    "--quick", is_flag=True, help="fewer episodes, runs and settings: a few minutes, for CI"
)
@click.option(
    "--model",
    "models",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="model directories of the bundle, repeatable: the float one (float Keras, float TFLite and "
    "unpruned int8 baselines) and the compressed one (pruned float). Without them those variants "
    "are listed as not measured, with the reason",
)
@click.option(
    "--pareto",
    "pareto",
    multiple=True,
    type=click.Path(exists=True),
    help="another bundle of the same model (e.g. another --structured fraction), repeatable: held-out "
    "error vs ms/image and bytes for BUNDLE and these, timed interleaved",
)
@click.option(
    "--data",
    default=None,
    help="dataset spec to evaluate on (its held-out test classes; default: the "
    "built-in glyphs when the bundle was trained on them, else required)",
)
@click.option(
    "--readme-section",
    "readme",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="instead of benchmarking, rewrite the bench section of this README from BUNDLE/report.json "
    "(BUNDLE is then a bench output directory or report.json)",
)
@verbose_option
@fail_cleanly
def bench_cmd(bundle, out, quick, models, pareto, data, readme):
    """Benchmark BUNDLE on this machine: accuracy, size, latency, Pareto, adaptation, memory.

    \b
    Writes OUT/report.json, OUT/report.md and PNG plots. Sections: machine (and how busy it was while
    timing), accuracy (N-way K-shot on the held-out test classes, every backbone variant, same head-only
    adaptation), size (bytes, MACs per image), latency (variants and interpreters interleaved round by
    round, batch 1/32, 1/2 threads; median and quartiles over rounds, speed-ups within rounds, GMAC/s;
    float Keras as desktop reference), pareto (with --pareto: Lake-style error vs ms/image and bytes),
    adaptation (metalite vs TFLite on-device training, Keras fine-tuning, pycoral-style SGD) and memory
    (peak RSS of a runtime-only process). Timings on a busy machine carry a warning.
    \b
    Example:
      metalite bench models/omniglot --out benchmarks/reference \\
          --data omniglot:DIR/images_background_small1.zip,DIR/images_background_small2.zip
    """
    from pathlib import Path

    if readme:
        from metalite.bench.readme import update_readme

        src = Path(bundle)
        report = src / "report.json" if src.is_dir() else src
        try:
            changed = update_readme(readme, report)
        except (ValueError, OSError) as e:
            raise click.ClickException(str(e)) from None
        click.echo(f"{readme}: {'updated' if changed else 'up to date'}")
        return

    from metalite.bench.run import run_bench

    report = run_bench(bundle, out, quick=quick, model_dirs=models, data_spec=data, pareto=pareto)
    h = report["headline"]
    click.echo(f"wrote {Path(out) / 'report.md'}")
    if h.get("busy_warning"):
        click.echo(f"warning: {h['busy_warning']}")
    for ref, what in (("float_tflite", "float TFLite"), ("int8_tflite", "unpruned int8")):
        if h.get(f"speedup_vs_{ref}_b1"):
            click.echo(
                f"{h['shipped_label']} vs {what} (batch 1, 1 thread, within rounds): "
                f"{h[f'speedup_vs_{ref}_b1']:.2f}x faster"
            )
    if h.get("float_tflite_over_int8_size"):
        click.echo(
            f"{h['shipped_label']} vs float TFLite size: {h['float_tflite_over_int8_size']:.1f}x smaller"
        )
    best = h.get("pareto_best")
    if best:
        click.echo(
            f"pareto: {best['label']} vs {best['reference']}: {best['speedup_b1']:.2f}x faster at "
            f"{100 * best['error_diff']:+.2f} pt {best['protocol']} error"
            + ("" if best["meets_goal"] else " (no bundle meets the goal)")
        )


def register(group) -> None:
    group.add_command(bench_cmd)
