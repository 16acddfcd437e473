"""The device's commands: ``metalite sync`` and ``metalite device install|adapt|predict|correct|status|serve``.

They work on a device home (``--home``, layout in docs/fleet.md) and import only ``metalite.runtime``
(plus ``cryptography`` when a signature is checked), like ``adapt``/``predict``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from .cli_runtime import (
    DELEGATE_CHOICE,
    UNKNOWN_HELP,
    UnknownSetting,
    emit_rows,
    prediction_rows,
    support_folders,
)
from .clikit import fail_cleanly, plural

HOME = click.option(
    "--home",
    required=True,
    envvar="METALITE_HOME",
    type=click.Path(file_okay=False, path_type=Path),
    help="The device home (created if missing). Env: METALITE_HOME.",
)


def _home(path: Path):
    from metalite.runtime.sync import DeviceHome

    return DeviceHome(path)


def _say(msg: str) -> None:
    click.echo(f"sync: {msg}", err=True)


@click.command("sync")
@click.option(
    "--server",
    required=True,
    envvar="METALITE_SERVER",
    help="Fleet server URL. Env: METALITE_SERVER.",
)
@click.option(
    "--token",
    required=True,
    envvar="METALITE_TOKEN",
    help="This device's token from 'metalite fleet enroll'. Env: METALITE_TOKEN.",
)
@click.option(
    "--pubkey",
    envvar="METALITE_PUBKEY",
    default=None,
    help="The server's public key (hex, or a file holding it). Env: METALITE_PUBKEY.",
)
@HOME
@click.option(
    "--allow-unsigned", is_flag=True, help="Accept releases without checking a signature (unsafe)."
)
@click.option("--allow-older", is_flag=True, help="Accept a version older than the running one.")
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0, 1),
    default=None,
    help="Largest allowed drop of leave-one-out accuracy on the support set [home config, 0.1].",
)
@click.option("--no-upload", is_flag=True, help="Do not upload the outbox.")
@click.option("--no-update", is_flag=True, help="Do not look for a newer bundle.")
@click.option(
    "--share-support/--no-share-support",
    default=None,
    help="Upload the support images of the device's classes (once each) so the back end can fine-tune "
    "on them [home config share_support, on].",
)
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds per HTTP call.",
)
@click.option(
    "--share-class",
    "share_classes",
    multiple=True,
    metavar="NAME",
    help="After syncing, put this learned class (label + its support images) in the fleet's class "
    "library. Repeatable.",
)
@click.option(
    "--pull-class",
    "pull_classes",
    multiple=True,
    metavar="NAME",
    help="After syncing, add this shared class from the library, embedded by this device's backbone "
    "(no retraining); the state is saved. Repeatable.",
)
@click.option(
    "--replace-class",
    is_flag=True,
    help="With --pull-class: replace a class of the same name here; with --share-class: renew a class "
    "this device shared before.",
)
@click.option(
    "--list-classes", is_flag=True, help="After syncing, list the classes in the fleet's library."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def sync_cmd(
    server,
    token,
    pubkey,
    home,
    allow_unsigned,
    allow_older,
    max_accuracy_drop,
    no_upload,
    no_update,
    share_support,
    delegate,
    timeout,
    share_classes,
    pull_classes,
    replace_class,
    list_classes,
    as_json,
):
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
    r = sync(
        _home(home),
        server,
        token,
        key,
        allow_unsigned=allow_unsigned,
        allow_older=allow_older,
        max_drop=max_accuracy_drop,
        upload=not no_upload,
        update=not no_update,
        share_support=share_support,
        delegate=delegate,
        timeout=timeout,
        say=_say,
    )
    if as_json:
        click.echo(json.dumps(asdict(r), indent=2))
    elif r.offline:
        click.echo(
            f"offline: server not reachable or busy; {plural(r.pending, 'example')} kept in the outbox"
        )
    else:
        u = r.update
        news = (
            "no release published"
            if u is None
            else f"v{u.running} is current"
            if u.status == "current"
            else f"switched to v{u.offered}"
            if u.status == "switched"
            else f"{'the offer' if u.offered is None else f'v{u.offered}'} {u.status}: {u.reason}"
        )
        click.echo(
            f"uploaded {plural(r.uploaded, 'example')} ({r.duplicates} already there), {r.pending} waiting; "
            f"{news}"
        )
    if share_classes or pull_classes or list_classes:
        _class_library(
            home,
            server,
            token,
            timeout,
            r.offline,
            share_classes,
            pull_classes,
            replace_class,
            list_classes,
            delegate,
            as_json,
        )
    if r.update is not None and r.update.status in ("refused", "failed"):
        sys.exit(3)


def _class_library(
    home, server, token, timeout, offline, shares, pulls, replace, listing, delegate, as_json
):
    """The class-library steps of ``metalite sync`` (``metalite.runtime.sync.classes``)."""
    from metalite.runtime.sync import (
        FleetClient,
        SyncError,
        pull_class,
        share_class,
        shared_classes,
    )

    if offline:
        raise SyncError("class library: the server is not reachable; nothing shared or pulled")
    client, h = FleetClient(server, token, timeout), _home(home)
    for name in shares:
        got = share_class(h, client, name, replace=replace)
        click.echo(
            f"shared class {name!r} ({plural(got['images'], 'image')})"
            + (" (replaced)" if got["replaced"] else "")
        )
    for name in pulls:
        got = pull_class(h, client, name, replace=replace, delegate=delegate)
        click.echo(
            f"pulled class {name!r} ({plural(got['images'], 'image')}); "
            f"{plural(got['classes'], 'class')} learned, state saved"
        )
    if listing:
        rows = shared_classes(client)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            click.echo(
                f"{plural(len(rows), 'shared class', 'shared classes')}" + (":" if rows else "")
            )
            for c in rows:
                click.echo(
                    f"  {c['name']}  {plural(c['images'], 'image')}, from {c['device']} (v{c['version']})"
                )


@click.group("device")
def device_group():
    """Use a device home: install a bundle, learn classes, predict (unsure ones go to the outbox), correct, status,
    serve a page."""


@device_group.command("install")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@HOME
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(0, 1),
    default=None,
    help="Largest allowed drop of leave-one-out accuracy on the support set when the learned classes "
    "move to the new bundle [home config, 0.1].",
)
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@fail_cleanly
def device_install_cmd(bundle, home, max_accuracy_drop, delegate, quiet):
    """Install BUNDLE (a directory or .zip) as the next version of the device home, without a fleet server.

    The bundle's checksums are verified before anything changes; classes learned on the running version
    are re-embedded by the new backbone and must pass the same health check as 'metalite sync' (else the
    old version keeps running, exit 3). The switch is atomic. Installing the running bundle again does
    nothing. Then: 'metalite device adapt SUPPORT_DIR --home ...' and 'metalite device predict ...'.
    """
    from metalite.runtime.sync import UpdateRefusedError, install_bundle

    from .clikit import console_progress

    try:
        version = install_bundle(
            home, bundle, console_progress(quiet), max_drop=max_accuracy_drop, delegate=delegate
        )
    except UpdateRefusedError as e:
        e.exit_code = 3
        raise
    click.echo(f"{Path(home)}: v{version} running ({bundle})")


@device_group.command("adapt")
@click.argument("support_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@HOME
@click.option(
    "--add", is_flag=True, help="Add these classes to the learned ones instead of replacing them."
)
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@click.option(
    "--unknown",
    type=UnknownSetting(),
    default=None,
    help=UNKNOWN_HELP
    + "; kept in the state and recalibrated by updates [the state's setting, else off].",
)
@fail_cleanly
def device_adapt_cmd(support_dir, home, add, delegate, unknown):
    """Learn the classes in SUPPORT_DIR (one folder of images per class) on the running version; save the state."""
    h = _home(home)
    classes = {
        name: [str(p) for p in paths] for name, paths in support_folders(support_dir).items()
    }
    clf = h.classifier(delegate=delegate, **({} if unknown is None else {"unknown": unknown}))
    if add and clf.head is not None:
        for name, paths in classes.items():
            clf.add_class(name, paths)
    else:
        clf.fit(classes)
    h.save(clf)
    click.echo(
        f"v{clf.version}: {plural(len(clf.classes), 'class')} learned; state saved in {h.state_path()}"
    )
    if clf.unknown is not None:
        from metalite.runtime.openset import describe

        click.echo(f"open set: {describe(clf.unknown)}")


@device_group.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@HOME
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {image, label, confidence, error}.",
)
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@click.option(
    "--unknown",
    type=UnknownSetting(),
    default=None,
    help=UNKNOWN_HELP
    + "; for this run, recalibrated on the stored support set [the state's setting].",
)
@fail_cleanly
def device_predict_cmd(images, home, as_json, delegate, unknown):
    """Classify the images; those below the home's confidence threshold are kept in the outbox.

    With open-set answers on (--unknown, or 'device adapt --unknown'), images far from every learned class
    are labelled <unknown> and kept in the outbox as their own kind.

    An image that cannot be read is reported on its own; the others are still classified (exit code 1).
    """
    from metalite.runtime.errors import InputError
    from metalite.runtime.images import as_model_input
    from metalite.runtime.sync.outbox import KINDS, OutboxUnavailableWarning

    h = _home(home)
    with warnings.catch_warnings():  # said once, in the last line
        warnings.simplefilter("ignore", OutboxUnavailableWarning)
        clf = h.classifier(delegate=delegate, **({} if unknown is None else {"unknown": unknown}))
    before = h.outbox().kinds()
    results, good = [None] * len(images), []
    for i, p in enumerate(
        images
    ):  # find unreadable images first: the outbox keeps only real predictions
        try:
            as_model_input([str(p)], clf.bundle.input_shape, clf.bundle.preprocess)
            good.append(i)
        except InputError as e:
            results[i] = e
    refused = None if clf.unknown is None else [False] * len(images)
    if good:
        paths = [str(images[i]) for i in good]
        for i, row in zip(good, clf.predict_proba(paths)):
            results[i] = row
        if refused is not None:  # the embeddings are cached: no second backbone run
            for i, r in zip(good, clf.is_unknown(paths)):
                refused[i] = bool(r)
    failed = emit_rows(prediction_rows(images, results, clf.classes, refused), as_json)
    if h.outbox().writable:
        after = h.outbox().kinds()
        new = {k: after.get(k, 0) - before.get(k, 0) for k in KINDS}
        click.echo(
            f"{plural(new['unsure'], 'unsure prediction')} kept in the outbox (threshold {clf.threshold})"
            + ("" if clf.unknown is None else f", {new['unknown']} unknown"),
            err=True,
        )
    else:
        click.echo(
            f"nothing recorded: the outbox cannot be written ({h.outbox().reason})", err=True
        )
    if failed:
        sys.exit(1)


@device_group.command("correct")
@click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--label", required=True, help="What IMAGE... really show.")
@HOME
@click.option(
    "--no-learn",
    is_flag=True,
    help="Only report the correction; do not add the images to the class.",
)
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@fail_cleanly
def device_correct_cmd(images, label, home, no_learn, delegate):
    """Record that the images show --label (sent to the server) and learn them, so the mistake is not repeated."""
    h = _home(home)
    clf = h.classifier(delegate=delegate)
    clf.correct([str(p) for p in images], label, learn=not no_learn)
    if not no_learn:
        h.save(clf)
    click.echo(
        f"{len(images)} corrections to {label!r} kept in the outbox"
        + ("" if no_learn else f"; class {label!r} now has them")
    )


@device_group.command("status")
@HOME
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@fail_cleanly
def device_status_cmd(home, as_json):
    """The running version, its classes and the outbox."""
    from metalite.runtime.state import load_state

    h = _home(home)
    cur = h.current()
    st = {
        "home": str(h.root),
        "version": cur and cur["version"],
        "previous": cur and cur.get("previous"),
        "switched": cur and cur.get("switched"),
        "classes": [],
        "support_images": 0,
        "outbox": h.outbox().pending(),
        "outbox_kinds": h.outbox().kinds(),
        "dropped": h.outbox().dropped,
        "unknown": None,
    }
    if cur is not None and h.state_path().is_file():
        s = load_state(h.state_path())
        st.update(
            classes=s.classes,
            support_images=len(s.support),
            images_kept=s.images is not None,
            unknown=s.unknown,
        )
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(
        f"{h.root}: "
        + (
            f"v{st['version']} (switched {st['switched']})"
            if cur
            else "no bundle yet (run 'metalite device install BUNDLE' or 'metalite sync')"
        )
    )
    click.echo(
        f"classes: {len(st['classes'])} ({st['support_images']} support images)"
        + (f": {', '.join(map(str, st['classes'][:10]))}" if st["classes"] else "")
    )
    from metalite.runtime.openset import describe

    click.echo(f"open set: {describe(st['unknown'])}")
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(st["outbox_kinds"].items()))
    click.echo(
        f"outbox: {st['outbox']} waiting{f' ({kinds})' if kinds else ''}, {st['dropped']} dropped when full"
    )


@device_group.command("serve")
@HOME
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Beyond localhost (e.g. 0.0.0.0) every request needs the access token.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port (0: any free one).",
)
@click.option(
    "--token",
    envvar="METALITE_PAGE_TOKEN",
    default=None,
    help="Access token required beyond localhost [a new random one each start]. Env: METALITE_PAGE_TOKEN.",
)
@click.option(
    "--self-signed",
    is_flag=True,
    help="Serve https with a self-signed certificate made once in HOME/tls (a phone's browser gives the "
    "camera only to https pages); needs the openssl command.",
)
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Serve https with this certificate (PEM); with --tls-key.",
)
@click.option(
    "--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None
)
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(0.1, 100),
    default=16.0,
    show_default=True,
    help="Largest request body (images travel base64-encoded: a third larger than the file).",
)
@click.option(
    "--watch",
    "watch_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Also classify each new image file appearing in this folder (a camera's output).",
)
@click.option(
    "--watch-log",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append the watch mode's JSON lines to this file [standard output].",
)
@click.option("--no-page", is_flag=True, help="With --watch: only watch, serve no page.")
@click.option("--delegate", type=DELEGATE_CHOICE, default="auto", show_default=True)
@fail_cleanly
def device_serve_cmd(
    home,
    host,
    port,
    token,
    self_signed,
    tls_cert,
    tls_key,
    max_upload_mb,
    watch_dir,
    watch_log,
    no_page,
    delegate,
):
    """Serve the device page: teach classes from a phone's camera or files, recognize, correct, rename, remove.

    Opens the running version of the home (as 'metalite sync' keeps it; no fleet needed). Corrections go
    to the outbox like 'metalite device correct'. Every change is saved atomically in the home's state.

    \b
    From a phone (the camera needs https or localhost; docs/device_page.md):
      metalite device serve --home H --host 0.0.0.0 --self-signed   # open the printed https URL
      ssh -L 8080:localhost:8080 pi@device                          # or forward the port from a laptop
    """
    from metalite.runtime.interpreter import describe
    from metalite.runtime.sync import DeviceHome
    from metalite.runtime.webui import PageServer, Teacher, Watcher, lan_address, tls_context
    from metalite.runtime.webui import self_signed as make_cert

    if no_page and watch_dir is None:
        raise click.UsageError("--no-page needs --watch")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    h = DeviceHome(home)
    teacher = Teacher(h, delegate=delegate)
    watcher = None
    if watch_dir is not None:
        out = open(watch_log, "a", encoding="utf-8") if watch_log else sys.stdout
        watcher = Watcher(teacher, watch_dir, out).start()
        click.echo(
            f"watching {watch_dir}: a JSON line per new image to {watch_log or 'standard output'}",
            err=True,
        )
    if no_page:
        _wait_forever(watcher)
        return
    tls = None
    if self_signed:
        tls_cert, tls_key = make_cert(
            h.root / "tls", ["localhost", "127.0.0.1", host, lan_address(), _hostname()]
        )
    if tls_cert is not None:
        tls = tls_context(tls_cert, tls_key)
    server = PageServer(
        (host, port), teacher, token=token, max_body=int(max_upload_mb * 2**20), tls=tls
    )
    click.echo(
        f"v{teacher.clf.version}, {len(teacher.clf.classes)} classes; {describe(teacher.clf.acceleration)}",
        err=True,
    )
    if server.access.needs_token:
        click.echo(
            f"serving {server.url} to the network; access token: {server.access.token} "
            f"(on a phone open {server.url}#token={server.access.token})",
            err=True,
        )
    else:
        click.echo(
            f"serving {server.url} (this machine only; --host 0.0.0.0 for the network)", err=True
        )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if watcher is not None:
            watcher.stop()


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _wait_forever(watcher) -> None:
    import time

    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        watcher.stop()


def register(group: click.Group) -> None:
    """Add ``sync`` and the ``device`` group to ``group``."""
    group.add_command(sync_cmd)
    group.add_command(device_group)
