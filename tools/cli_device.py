"""The device's fleet commands: ``metalite sync`` and ``metalite device adapt|predict|correct|status``.

They work on a device home (``--home``, layout in docs/fleet.md) and import only ``metalite.runtime``
(plus ``cryptography`` when a signature is checked), like ``adapt``/``predict``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli_runtime import DELEGATE_CHOICE, support_folders, emit_rows, prediction_rows
from .clikit import fail_cleanly, plural

HOME = click.option("--home", required=True, envvar="METALITE_HOME", type=click.Path(file_okay=False, path_type=Path),
                    help="The device home (created if missing). Env: METALITE_HOME.")


def _home(path: Path):
    from metalite.runtime.sync import DeviceHome

    return DeviceHome(path)


def _say(msg: str) -> None:
    click.echo(f"sync: {msg}", err=True)


@click.command("sync")
@click.option("--server", required=True, envvar="METALITE_SERVER", help="Fleet server URL. Env: METALITE_SERVER.")
@click.option("--token", required=True, envvar="METALITE_TOKEN",
              help="This device's token from 'metalite fleet enroll'. Env: METALITE_TOKEN.")
@click.option("--pubkey", envvar="METALITE_PUBKEY", default=None,
              help="The server's public key (hex, or a file holding it). Env: METALITE_PUBKEY.")
@HOME
@click.option("--allow-unsigned", is_flag=True, help="Accept releases without checking a signature (unsafe).")
@click.option("--allow-older", is_flag=True, help="Accept a version older than the running one.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0, 1), default=None,
              help="Largest allowed drop of leave-one-out accuracy on the support set [home config, 0.1].")
@click.option("--no-upload", is_flag=True, help="Do not upload the outbox.")
@click.option("--no-update", is_flag=True, help="Do not look for a newer bundle.")
@click.option("--share-support/--no-share-support", default=None,
              help="Upload the support images of the device's classes (once each) so the back end can fine-tune "
                   "on them [home config share_support, on].")
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds per HTTP call.")
@click.option("--share-class", "share_classes", multiple=True, metavar="NAME",
              help="After syncing, put this learned class (label + its support images) in the fleet's class "
                   "library. Repeatable.")
@click.option("--pull-class", "pull_classes", multiple=True, metavar="NAME",
              help="After syncing, add this shared class from the library, embedded by this device's backbone "
                   "(no retraining); the state is saved. Repeatable.")
@click.option("--replace-class", is_flag=True,
              help="With --pull-class: replace a class of the same name here; with --share-class: renew a class "
                   "this device shared before.")
@click.option("--list-classes", is_flag=True, help="After syncing, list the classes in the fleet's library.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def sync_cmd(server, token, pubkey, home, allow_unsigned, allow_older, max_accuracy_drop, no_upload, no_update,
             share_support, delegate, timeout, share_classes, pull_classes, replace_class, list_classes, as_json):
    """Upload the outbox, then take a newer signed bundle if the server has one (re-embedding the classes).

    Then, if asked, share classes with the fleet's class library, pull shared ones or list them: images
    travel, not embeddings, so a class shared from any bundle version works here.

    \b
    Exit status: 0 done (also when the server is unreachable: the outbox is kept),
    3 an offered update was refused or failed (the old version keeps running), 1 other errors
    (including a class that cannot be shared or pulled, or class commands while offline).
    """
    from dataclasses import asdict

    from metalite.runtime.sync import parse_public_key, sync

    key = parse_public_key(pubkey) if pubkey else None
    r = sync(_home(home), server, token, key, allow_unsigned=allow_unsigned, allow_older=allow_older,
             max_drop=max_accuracy_drop, upload=not no_upload, update=not no_update, share_support=share_support,
             delegate=delegate,
             timeout=timeout, say=_say)
    if as_json:
        click.echo(json.dumps(asdict(r), indent=2))
    elif r.offline:
        click.echo(f"offline: server not reachable; {plural(r.pending, 'example')} kept in the outbox")
    else:
        u = r.update
        news = ("no release published" if u is None else f"v{u.running} is current" if u.status == "current"
                else f"switched to v{u.offered}" if u.status == "switched" else f"v{u.offered} {u.status}: {u.reason}")
        click.echo(f"uploaded {plural(r.uploaded, 'example')} ({r.duplicates} already there), {r.pending} waiting; "
                   f"{news}")
    if share_classes or pull_classes or list_classes:
        _class_library(home, server, token, timeout, r.offline, share_classes, pull_classes, replace_class,
                       list_classes, delegate, as_json)
    if r.update is not None and r.update.status in ("refused", "failed"):
        sys.exit(3)


def _class_library(home, server, token, timeout, offline, shares, pulls, replace, listing, delegate, as_json):
    """The class-library steps of ``metalite sync`` (``metalite.runtime.sync.classes``)."""
    from metalite.runtime.sync import FleetClient, SyncError, pull_class, share_class, shared_classes

    if offline:
        raise SyncError("class library: the server is not reachable; nothing shared or pulled")
    client, h = FleetClient(server, token, timeout), _home(home)
    for name in shares:
        got = share_class(h, client, name, replace=replace)
        click.echo(f"shared class {name!r} ({plural(got['images'], 'image')})"
                   + (" (replaced)" if got["replaced"] else ""))
    for name in pulls:
        got = pull_class(h, client, name, replace=replace, delegate=delegate)
        click.echo(f"pulled class {name!r} ({plural(got['images'], 'image')}); "
                   f"{plural(got['classes'], 'class')} learned, state saved")
    if listing:
        rows = shared_classes(client)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            click.echo(f"{plural(len(rows), 'shared class', 'shared classes')}" + (":" if rows else ""))
            for c in rows:
                click.echo(f"  {c['name']}  {plural(c['images'], 'image')}, from {c['device']} (v{c['version']})")


@click.group("device")
def device_group():
    """Use a device home: learn classes, predict (unsure ones go to the outbox), correct, status."""


@device_group.command("adapt")
@click.argument("support_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@HOME
@click.option("--add", is_flag=True, help="Add these classes to the learned ones instead of replacing them.")
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@fail_cleanly
def device_adapt_cmd(support_dir, home, add, delegate):
    """Learn the classes in SUPPORT_DIR (one folder of images per class) on the running version; save the state."""
    h = _home(home)
    classes = {name: [str(p) for p in paths] for name, paths in support_folders(support_dir).items()}
    clf = h.classifier(delegate=delegate)
    if add and clf.head is not None:
        for name, paths in classes.items():
            clf.add_class(name, paths)
    else:
        clf.fit(classes)
    h.save(clf)
    click.echo(f"v{clf.version}: {plural(len(clf.classes), 'class')} learned; state saved in {h.state_path()}")


@device_group.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@HOME
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {image, label, confidence, error}.")
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@fail_cleanly
def device_predict_cmd(images, home, as_json, delegate):
    """Classify the images; those below the home's confidence threshold are kept in the outbox.

    An image that cannot be read is reported on its own; the others are still classified (exit code 1).
    """
    from metalite.runtime.errors import InputError
    from metalite.runtime.images import as_model_input

    h = _home(home)
    clf = h.classifier(delegate=delegate)
    before = h.outbox().pending()
    results, good = [None] * len(images), []
    for i, p in enumerate(images):  # find unreadable images first: the outbox keeps only real predictions
        try:
            as_model_input([str(p)], clf.bundle.input_shape, clf.bundle.preprocess)
            good.append(i)
        except InputError as e:
            results[i] = e
    if good:
        for i, row in zip(good, clf.predict_proba([str(images[i]) for i in good])):
            results[i] = row
    failed = emit_rows(prediction_rows(images, results, clf.classes), as_json)
    click.echo(f"{plural(h.outbox().pending() - before, 'unsure prediction')} kept in the outbox "
               f"(threshold {clf.threshold})", err=True)
    if failed:
        sys.exit(1)


@device_group.command("correct")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--label", required=True, help="What IMAGE... really show.")
@HOME
@click.option("--no-learn", is_flag=True, help="Only report the correction; do not add the images to the class.")
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@fail_cleanly
def device_correct_cmd(images, label, home, no_learn, delegate):
    """Record that the images show --label (sent to the server) and learn them, so the mistake is not repeated."""
    h = _home(home)
    clf = h.classifier(delegate=delegate)
    clf.correct([str(p) for p in images], label, learn=not no_learn)
    if not no_learn:
        h.save(clf)
    click.echo(f"{len(images)} corrections to {label!r} kept in the outbox"
               + ("" if no_learn else f"; class {label!r} now has them"))


@device_group.command("status")
@HOME
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def device_status_cmd(home, as_json):
    """The running version, its classes and the outbox."""
    from metalite.runtime.state import load_state

    h = _home(home)
    cur = h.current()
    st = {"home": str(h.root), "version": cur and cur["version"], "previous": cur and cur.get("previous"),
          "switched": cur and cur.get("switched"), "classes": [], "support_images": 0,
          "outbox": h.outbox().pending(), "dropped": h.outbox().dropped}
    if cur is not None and h.state_path().is_file():
        s = load_state(h.state_path())
        st.update(classes=s.classes, support_images=len(s.support), images_kept=s.images is not None)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"{h.root}: " + (f"v{st['version']} (switched {st['switched']})" if cur else "no bundle yet (run 'metalite sync')"))
    click.echo(f"classes: {len(st['classes'])} ({st['support_images']} support images)"
               + (f": {', '.join(map(str, st['classes'][:10]))}" if st["classes"] else ""))
    click.echo(f"outbox: {st['outbox']} waiting, {st['dropped']} dropped when full")


def register(group: click.Group) -> None:
    """Add ``sync`` and the ``device`` group to ``group``."""
    group.add_command(sync_cmd)
    group.add_command(device_group)
