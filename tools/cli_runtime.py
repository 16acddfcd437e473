"""The device-side commands of the ``metalite`` CLI: ``adapt`` and ``predict``.

``register(group)`` adds them to the main click group (``tools/cli.py``). They import only numpy,
click and ``metalite.runtime`` (never TensorFlow), so they run on a device with just tflite-runtime or
ai-edge-litert; ``python -m metalite.tools.cli_runtime`` runs them without the rest of the CLI.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
import numpy as np

from .clikit import fail_cleanly, plural, verbose_option

DELEGATE_CHOICE = click.Choice(["auto", "cpu", "edgetpu"])


class UnknownSetting(click.ParamType):
    """``--unknown``: ``auto`` (the default target rate), ``off`` (False: not None, which means "not given"),
    or a target false-rejection rate in (0, 0.5]; converted to what ``FewShotClassifier(unknown=...)`` takes."""

    name = "auto|off|RATE"

    def convert(self, value, param, ctx):
        from metalite.runtime.openset import check_rate

        if not isinstance(value, str):
            return value
        if value == "off":
            return False
        try:
            return check_rate("auto" if value == "auto" else float(value))
        except ValueError as e:
            self.fail(f"{value!r}: {e}" if value != "auto" else str(e), param, ctx)


UNKNOWN_HELP = (
    "Answer '<unknown>' for images far from every learned class: auto (target: 1% of images of the "
    "learned classes refused), a target rate such as 0.05, or off. The threshold is calibrated from the "
    "support set (docs/open_set.md)"
)


def support_folders(support_dir: Path) -> dict:
    """``{class name: [image paths]}`` from SUPPORT_DIR/<class>/<image>; raises click errors when unusable."""
    from metalite.runtime.folders import class_folders
    from metalite.runtime.images import IMAGE_EXTENSIONS

    if not support_dir.is_dir():
        raise click.BadParameter(f"{support_dir} is not a directory", param_hint="SUPPORT_DIR")
    classes = {}
    for name, images in class_folders(support_dir):
        if not images:
            raise click.ClickException(
                f"class folder {support_dir / name} has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        classes[name] = images
    if not classes:
        raise click.ClickException(
            f"{support_dir} has no class folders (expected SUPPORT_DIR/<class>/<images>)"
        )
    return classes


def _classifier(bundle, threads, delegate, state=None, unknown=None):
    """The classifier; ``unknown`` None keeps a state's open-set setting (off for a new classifier)."""
    from metalite.runtime import FewShotClassifier

    kw = {} if unknown is None else {"unknown": unknown}
    if state is not None:
        return FewShotClassifier.load(bundle, state, num_threads=threads, delegate=delegate, **kw)
    return FewShotClassifier(bundle, num_threads=threads, delegate=delegate, **kw)


@click.command("adapt")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("support_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the adapted state (.npz), atomically.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Interpreter CPU threads."
)
@click.option(
    "--delegate",
    type=DELEGATE_CHOICE,
    default="auto",
    show_default=True,
    help="Edge TPU if available (auto), CPU only, or require the Edge TPU.",
)
@click.option(
    "--unknown",
    type=UnknownSetting(),
    default=None,
    help=UNKNOWN_HELP + "; kept in the state [off].",
)
@verbose_option
@fail_cleanly
def adapt_cmd(bundle, support_dir, out, threads, delegate, unknown):
    """Learn the classes in SUPPORT_DIR (one folder of images per class) with BUNDLE; save the state to --out."""
    classes = support_folders(support_dir)
    clf = _classifier(bundle, threads, delegate, unknown=unknown)
    t0 = time.perf_counter()
    clf.fit({name: [str(p) for p in paths] for name, paths in classes.items()})
    dt = time.perf_counter() - t0
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    clf.save(out)
    n = sum(len(v) for v in classes.values())
    click.echo(
        f"adapted {plural(len(classes), 'class')} from {plural(n, 'image')} in {dt:.2f} s on {clf.device} "
        f"({clf.backend}, delegate {clf.acceleration.delegate}); state written to {out}"
    )
    if clf.unknown is not None:
        from metalite.runtime.openset import describe

        click.echo(f"open set: {describe(clf.unknown)}")


def prediction_rows(images, results, classes, refused=None) -> list:
    """One row per image, ``{"image", "label", "confidence", "error"}``, from per-image results (a
    probability row or the error that image raised); a row that is not finite becomes an error too.
    ``refused``: per-image open-set answers (True: label ``<unknown>``, with ``nearest`` the closest class and
    ``confidence`` its probability), or None when open-set answers are off (no ``nearest`` key)."""
    from metalite.runtime.openset import UNKNOWN

    rows = []
    for i, (path, res) in enumerate(zip(images, results)):
        if not isinstance(res, Exception) and not np.all(np.isfinite(res)):
            res = ValueError("the head gave non-finite scores for this image")
        if isinstance(res, Exception):
            msg = str(res) if str(path) in str(res) else f"{path}: {res}"
            rows.append({"image": str(path), "label": None, "confidence": None, "error": msg})
        else:
            k = int(np.argmax(res))
            row = {
                "image": str(path),
                "label": classes[k],
                "confidence": round(float(res[k]), 6),
                "error": None,
            }
            if refused is not None:
                row.update(label=UNKNOWN if refused[i] else classes[k], nearest=classes[k])
            rows.append(row)
    return rows


def emit_rows(rows: list, as_json: bool) -> int:
    """Print prediction rows (a JSON list, or ``image<TAB>label<TAB>confidence`` lines and one stderr line
    per failed image); return how many failed."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, allow_nan=False))
    else:
        for r in rows:
            if r["error"] is None:
                click.echo(f"{r['image']}\t{r['label']}\t{r['confidence']:.4f}")
            else:
                click.echo(f"Error: {r['error']}", err=True)
    failed = sum(r["error"] is not None for r in rows)
    if failed:
        click.echo(f"Error: {failed} of {len(rows)} images could not be classified", err=True)
    return failed


@click.command("predict")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--state",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="State file written by 'metalite adapt'.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {image, label, confidence, error} instead of text lines.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Interpreter CPU threads."
)
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@click.option(
    "--transductive",
    is_flag=True,
    help="Refine the class prototypes over all IMAGEs given before classifying them (more accurate on a "
    "batch of images of the learned classes; each answer then depends on the others).",
)
@click.option(
    "--unknown",
    type=UnknownSetting(),
    default=None,
    help=UNKNOWN_HELP + " [the state's setting, from adapt --unknown; else off].",
)
@verbose_option
@fail_cleanly
def predict_cmd(bundle, images, state, as_json, threads, delegate, transductive, unknown):
    """Classify IMAGE... with BUNDLE and an adapted --state: label and confidence per image.

    With --unknown (or a state adapted with it), an image far from every learned class is labelled
    <unknown>; its confidence is then that of the nearest class (JSON: "nearest").

    An image that cannot be read or classified is reported on its own (stderr, or its "error" field
    with --json); the others are still classified, and the exit code is 1.
    """
    clf = _classifier(bundle, threads, delegate, state, unknown)
    paths = [str(p) for p in images]
    results = clf.predict_proba_each(paths, transductive=transductive)
    if emit_rows(
        prediction_rows(images, results, clf.classes, open_set_answers(clf, paths, results)),
        as_json,
    ):
        sys.exit(1)


def open_set_answers(clf, paths: list, results: list):
    """Per image: True if the classifier refuses it as unknown (only images that were classified), or None
    for all when open-set answers are off."""
    if clf.unknown is None:
        return None
    good = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    out = [False] * len(paths)
    if good:  # embeddings are cached by content: no second backbone run
        for i, r in zip(good, clf.is_unknown([paths[i] for i in good])):
            out[i] = bool(r)
    return out


def register(group: click.Group) -> None:
    """Add the ``adapt`` and ``predict`` commands to ``group`` (the ``metalite`` click group)."""
    group.add_command(adapt_cmd)
    group.add_command(predict_cmd)


@click.group()
def main():
    """metalite device commands (adapt, predict) without the training/export parts of the CLI."""


register(main)

if __name__ == "__main__":
    sys.exit(main())
