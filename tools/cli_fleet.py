"""The server-side commands: ``metalite serve`` and ``metalite fleet enroll|publish|rollback|status|revoke|pubkey``.

FastAPI, uvicorn and cryptography (extra ``serve``) are imported inside the commands only.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from metalite.pipelines.fleet_update import UpdateOptions
from metalite.training.settings import STRATEGIES

from .clikit import console_progress, fail_cleanly, need, plural

UPDATE = UpdateOptions()  # the update's defaults, shown by --help
ROOT = click.option(
    "--root",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The fleet's directory (database, blobs, signing key).",
)


def _open(root: Path, create: bool = False):
    from metalite.fleet import FleetRoot

    return FleetRoot(root, create=create)


@click.command("serve")
@ROOT
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--max-request-bytes",
    type=click.IntRange(min=1024),
    default=4 << 20,
    show_default=True,
    help="Larger request bodies are refused (HTTP 413).",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Close a connection whose request headers do not arrive within this time (idle or slow clients).",
)
@click.option(
    "--update-every",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="HOURS",
    help="Also run 'metalite fleet update' on this root every HOURS (in a child process, never two at "
    "once; one log line per decision). Off by default.",
)
@click.option(
    "--update-args",
    default="",
    metavar="OPTIONS",
    help="Options for the scheduled updates, as on the command line, e.g. '--steps 300 --max-drop 0.005'.",
)
@fail_cleanly
def serve_cmd(root, host, port, max_request_bytes, header_timeout, update_every, update_args):
    """Run the fleet server devices sync with (HTTP; creates --root and its signing key on first start)."""
    import shlex

    for module in ("fastapi", "uvicorn", "cryptography"):
        need(module, "serve")
    from metalite.fleet.serve import serve

    say = lambda m: click.echo(m, err=True)  # noqa: E731
    try:
        extra = shlex.split(update_args)
    except ValueError as e:
        raise click.BadParameter(
            f"cannot split {update_args!r}: {e}", param_hint="--update-args"
        ) from None
    if extra and update_every is None:
        raise click.BadParameter("only with --update-every", param_hint="--update-args")
    if (
        update_every is not None
    ):  # bad options are found now, not when the first update runs hours later
        bad = next((a for a in extra if a.split("=")[0] in ("--root", "--json")), None)
        if bad:
            raise click.BadParameter(f"{bad} is set by serve itself", param_hint="--update-args")
        try:
            update_cmd.make_context("update", ["--root", str(root), *extra])
        except click.ClickException as e:
            raise click.BadParameter(e.format_message(), param_hint="--update-args") from None
    scheduler = None
    if update_every is not None:
        from metalite.pipelines.fleet_schedule import UpdateScheduler

        scheduler = UpdateScheduler(root, update_every * 3600, extra, say)
    try:
        serve(
            root,
            host,
            port,
            max_request_bytes,
            say=say,
            on_start=scheduler and scheduler.start,
            header_timeout=header_timeout,
        )
    finally:
        if scheduler is not None:
            scheduler.stop()


@click.group("fleet")
def fleet_group():
    """Administer a fleet on the server machine: devices, signed bundle versions, status."""


@fleet_group.command("enroll")
@click.argument("name")
@ROOT
@click.option(
    "--rotate",
    is_flag=True,
    help="Give an enrolled (or revoked) device a new token; the old one stops working.",
)
@fail_cleanly
def enroll_cmd(name, root, rotate):
    """Register device NAME and print its token once (stdout; it is stored only as a hash)."""
    from metalite.fleet import enroll

    token = enroll(_open(root, create=True), name, rotate=rotate)
    click.echo(
        f"{'new token for' if rotate else 'enrolled'} device {name!r}; its token (shown only now):",
        err=True,
    )
    click.echo(token)


@fleet_group.command("publish")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@ROOT
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The float model directory BUNDLE was exported from, kept with the version (for later updates).",
)
@click.option("--note", default="", help="Free text shown by 'fleet status'.")
@fail_cleanly
def publish_cmd(bundle, root, model_dir, note):
    """Verify BUNDLE, sign it and store it as the next version; devices take it at their next sync."""
    need("cryptography", "serve")
    from metalite.fleet import publish

    fleet = _open(root, create=True)
    if fleet.signing_key()[2]:
        click.echo(f"created signing key; public key: {fleet.public_key()}", err=True)
    r = publish(fleet, bundle, model_dir=model_dir, note=note)
    extra = f", model dir {plural(r['model_files'], 'file')}" if model_dir else ""
    extra += f"; left out {', '.join(r['left_out'])} (no device runs it)" if r["left_out"] else ""
    click.echo(
        f"published v{r['version']}: {plural(r['files'], 'file')}, {r['bytes'] / 1024:.0f} KiB, "
        f"manifest {r['manifest_sha256'][:12]}…{extra}"
    )


@fleet_group.command("update")
@ROOT
@click.option(
    "--model",
    "model_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Float model directory to start from [the one kept with the current release].",
)
@click.option(
    "--data",
    "data_spec",
    default=None,
    metavar="SPEC",
    help="Where this machine has the float model's original data (replayed and validation classes, "
    "the no-damage check's test classes), as for 'metalite train' [the paths its config names].",
)
@click.option(
    "--candidate",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Gate this bundle instead of training one (evaluation and publish decision only); e.g. a "
    "rejected one kept as ROOT/updates/rejected/<id>/bundle.",
)
@click.option(
    "--candidate-model",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The float model --candidate was exported from, kept with it if published [<id>/model beside "
    "a kept rejected candidate; otherwise none, and the release says so].",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=UPDATE.steps,
    show_default=True,
    help="Fine-tuning episodes.",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default=None,
    help="Distribution strategy of the fine-tuning run (as for 'metalite train').",
)
@click.option(
    "--replay",
    type=click.IntRange(min=0),
    default=UPDATE.replay,
    show_default=True,
    help="Original training classes trained on alongside the fleet's (against forgetting).",
)
@click.option(
    "--lr-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=UPDATE.lr_scale,
    show_default=True,
    help="Fine-tuning learning rate as a fraction of the model's (its compression's too).",
)
@click.option(
    "--queries",
    type=click.IntRange(min=1),
    default=UPDATE.queries,
    show_default=True,
    help="Query images per class in each fine-tuning episode (1: a fleet class of two images takes part).",
)
@click.option(
    "--batchnorm",
    type=click.Choice(["keep", "adapt"]),
    default=UPDATE.batchnorm,
    show_default=True,
    help="keep the model's BatchNorm statistics while fine-tuning and compressing (a few fleet classes must "
    "not replace what all its training data set), or adapt them to the fleet's episodes (a briefly "
    "trained model).",
)
@click.option(
    "--tta",
    type=click.Choice(["0", "4", "8"]),
    default=None,
    help="Shift averaging of the candidate's head [the current release's].",
)
@click.option(
    "--sparsity",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Weight sparsity of the candidate [the current release's].",
)
@click.option(
    "--prune-steps", type=click.IntRange(min=1), default=None, help="[the current release's]"
)
@click.option(
    "--qat-steps", type=click.IntRange(min=0), default=None, help="[the current release's]"
)
@click.option(
    "--ways",
    type=click.IntRange(min=2),
    default=UPDATE.ways,
    show_default=True,
    help="Ways of the paired 1-shot episodes on classes no one trained on (the 'no damage' check).",
)
@click.option(
    "--episodes",
    type=click.IntRange(min=10),
    default=UPDATE.episodes,
    show_default=True,
    help="Paired episodes of the 'no damage' check (600 at 20-way: CI about 0.2 pt).",
)
@click.option(
    "--unseen-classes",
    type=click.IntRange(min=2),
    default=UPDATE.unseen,
    show_default=True,
    help="At most this many classes no one trained on in that check (a seeded draw).",
)
@click.option(
    "--max-drop",
    type=click.FloatRange(0, 1),
    default=UPDATE.max_drop,
    show_default=True,
    help="Allowed drop (held-out fleet examples; unseen classes: beyond their paired 95%% CI).",
)
@click.option(
    "--keep-rejected",
    type=click.IntRange(min=0),
    default=UPDATE.keep_rejected,
    show_default=True,
    help="Rejected candidates kept under ROOT/updates/rejected/ (the newest).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision and figures as JSON.")
@fail_cleanly
def update_cmd(
    root,
    model_dir,
    data_spec,
    candidate,
    candidate_model,
    steps,
    strategy,
    replay,
    lr_scale,
    queries,
    batchnorm,
    tta,
    sparsity,
    prune_steps,
    qat_steps,
    ways,
    episodes,
    unseen_classes,
    max_drop,
    keep_rejected,
    as_json,
):
    """Fine-tune the current version on the fleet's labelled examples, gate it and publish it if not worse.

    \b
    Starts from the float model kept with the current release (fleet publish --model), trains on the
    corrections and shared support sets (de-duplicated by content; per class one image in five, at least
    one, held out, spread over devices) plus --replay original classes, then packages the candidate like
    the current release (tta, sparsity, PQAT, widths, compression steps: read from its manifest). Gate,
    through the device runtime: held-out fleet examples, and paired --ways-way 1-shot episodes on test
    classes of groups no device sent. Published releases keep a self-contained float model (the next
    update starts from it); rejected candidates are kept. Interrupted? Run it again: it resumes.
    """
    need("cryptography", "serve")

    from metalite.pipelines.fleet_update import update

    say = lambda m: click.echo(f"update: {m}", err=True)  # noqa: E731
    recipe = {
        "tta": None if tta is None else int(tta),
        "sparsity": sparsity,
        "prune_steps": prune_steps,
        "qat_steps": qat_steps,
    }
    options = UpdateOptions(
        model_dir=model_dir,
        candidate=candidate,
        candidate_model=candidate_model,
        steps=steps,
        strategy=strategy,
        replay=replay,
        lr_scale=lr_scale,
        recipe=recipe,
        ways=ways,
        episodes=episodes,
        unseen=unseen_classes,
        max_drop=max_drop,
        keep_rejected=keep_rejected,
        data=data_spec,
        batchnorm=batchnorm,
        queries=queries,
    )
    r = update(_open(root), options, say=say, progress=console_progress())
    if as_json:
        click.echo(json.dumps(r, indent=2))
    elif r["decision"] == "published":
        click.echo(f"published v{r['version']} ({r['figures']}) in {r['seconds']:.0f} s")
    else:
        click.echo(
            f"kept v{r['version']}: {r['reason']}"
            + (f"; candidate kept as {r['rejected']}" if r.get("rejected") else "")
        )


@fleet_group.command("rollback")
@ROOT
@click.option(
    "--to",
    "to_version",
    type=click.IntRange(min=1),
    required=True,
    help="The version to go back to.",
)
@fail_cleanly
def rollback_cmd(root, to_version):
    """Publish the files of an earlier version again, as the next version (devices only move forward)."""
    need("cryptography", "serve")
    from metalite.fleet import rollback

    r = rollback(_open(root), to_version)
    click.echo(f"published v{r['version']} = the files of v{to_version}")


@fleet_group.command("status")
@ROOT
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def status_cmd(root, as_json):
    """Devices (version running, last seen, examples received, last update problem) and versions."""
    from metalite.fleet.status import status, status_lines

    st = status(_open(root))
    click.echo(json.dumps(st, indent=2) if as_json else "\n".join(status_lines(st)))


@fleet_group.command("revoke")
@click.argument("name")
@ROOT
@fail_cleanly
def revoke_cmd(name, root):
    """Refuse device NAME's token from now on (its uploads stay)."""
    from metalite.fleet import revoke

    revoke(_open(root), name)
    click.echo(f"revoked device {name!r}")


@fleet_group.command("pubkey")
@ROOT
@fail_cleanly
def pubkey_cmd(root):
    """Print the fleet's public key (what devices get as --pubkey); creates the key if needed."""
    need("cryptography", "serve")
    click.echo(_open(root, create=True).signing_key()[1])


def register(group: click.Group) -> None:
    """Add ``serve`` and the ``fleet`` group to ``group``."""
    group.add_command(serve_cmd)
    group.add_command(fleet_group)
