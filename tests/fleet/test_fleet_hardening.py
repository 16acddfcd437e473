"""The fleet link against a hostile client, a hostile server, a full disk and a read-only SD card.

Real ``metalite serve`` subprocesses on 127.0.0.1 with real SQLite; full and read-only disks are small
tmpfs mounts (root only: skipped with the reason otherwise). The device side uses the shipped bundle
(``models/omniglot``), so no TensorFlow is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fleetkit import Server, request
from repo_paths import REPO

from metalite.fleet import FleetError, FleetRoot, enroll, publish
from metalite.fleet.status import status, status_lines
from metalite.runtime.bundle import open_bundle, sha256_file
from metalite.runtime.errors import BundleError
from metalite.runtime.names import bundle_file_problem, class_name_problem, terminal_safe
from metalite.runtime.sync import DeviceHome, FleetClient, UpdateRefusedError, sync
from metalite.runtime.sync.release import make_release, verify_release

BUNDLE = REPO / "models" / "omniglot"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT or not sys.platform.startswith("linux"),
    reason="mounting a small tmpfs (full / read-only disk) needs root on Linux",
)


def example(i, n=4, **kw):
    return {
        "id": f"ex-{i:08d}",
        "kind": "unsure",
        "height": 2,
        "width": n // 2,
        "pixels": base64.b64encode(bytes(range(n))).decode(),
        **kw,
    }


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A running server with one enrolled device: (server, token)."""
    d = tmp_path_factory.mktemp("fleet22")
    token = enroll(FleetRoot(d / "root", create=True), "dev-1")
    srv = Server(d / "root", d / "serve.log").start()
    yield srv, token
    srv.stop()
    assert "Traceback" not in (d / "serve.log").read_text()


# ---------------------------------------------------------------------------------------------- server input
def test_client_mistakes_are_4xx_naming_the_field_and_never_cost_the_rest_of_a_batch(fleet):
    srv, token = fleet
    status_, got = request(
        srv, "POST", "/v1/report", raw=b"[" * 100_000 + b"]" * 100_000, token=token
    )
    assert status_ == 400 and "nested" in got["detail"]
    batch = [
        example(1),
        example(2, version=2**64),
        example(3, label="a\ud800"),
        example(4, label="a\nb"),
        example(5, created=10**30),
        example(6, confidence=2**70),
        example(7, label=2**63),
        example(8, predicted="fine label"),
    ]
    status_, got = request(srv, "POST", "/v1/examples", {"examples": batch}, token)
    assert status_ == 200 and got["stored"] == 2, (
        got
    )  # ex 1 and 8: the valid ones are not lost with the rest
    reasons = {r["id"]: r["reason"] for r in got["rejected"]}
    assert reasons["ex-00000002"].startswith("version") and reasons["ex-00000003"].startswith(
        "label"
    )
    assert reasons["ex-00000004"].startswith("label") and reasons["ex-00000005"].startswith(
        "created"
    )
    assert reasons["ex-00000006"].startswith("confidence") and reasons["ex-00000007"].startswith(
        "label"
    )
    assert sorted(got["ids"]) == sorted(e["id"] for e in batch)  # the device may drop all of them
    for body, field in (
        ({"version": 2**64}, "version"),
        ({"pending": -1}, "pending"),
        ({"offered": 1.5, "event": "failed"}, "offered"),
        ({"platform": 7}, "platform"),
        ({"event": "exploded"}, "event"),
    ):
        status_, got = request(srv, "POST", "/v1/report", body, token)
        assert status_ == 422 and got["detail"].startswith(field), (body, got)
    # free text with a lone surrogate (a device's odd file name in a reason) is stored, not a 500
    status_, _ = request(
        srv,
        "POST",
        "/v1/report",
        {"platform": "x\ud800", "reason": "bad \udcff name", "event": "failed", "version": 3},
        token,
    )
    assert status_ == 200
    img = {"height": 1, "width": 1, "pixels": "AA=="}
    for body, field in (
        ({"name": "a\nb", "images": [img]}, "name"),
        ({"name": "a\ud800", "images": [img]}, "name"),
        ({"name": "\x1b[2J", "images": [img]}, "name"),
        ({"name": "   ", "images": [img]}, "name"),
        ({"name": "ok", "version": 2**70, "images": [img]}, "version"),
        ({"name": "ok", "replace": "no", "images": [img]}, "replace"),
    ):
        status_, got = request(srv, "POST", "/v1/classes", body, token)
        assert status_ == 422 and got["detail"].startswith(field), (body, got)


@pytest.mark.parametrize("name", ["cat", "a/b", "ünïcode ✓", "..", "?#%", " padded ", "x" * 200])
def test_every_name_the_rule_accepts_round_trips(fleet, name):
    srv, token = fleet
    assert class_name_problem(name) is None
    client = FleetClient(srv.url, token)
    from metalite.runtime.sync import fetch_class

    got = request(
        srv,
        "POST",
        "/v1/classes",
        {
            "name": name,
            "replace": True,
            "images": [{"height": 2, "width": 2, "pixels": "AAECAw=="}],
        },
        token,
    )
    assert got[0] == 201, got
    assert name in [c["name"] for c in client.call("GET", "/v1/classes")["classes"]]
    assert fetch_class(client, name).shape == (1, 2, 2)


def test_the_documented_class_maximum_fits_under_the_default_body_limit(fleet):
    from metalite.fleet.classes import MAX_CLASS_PIXELS, MAX_IMAGES

    srv, token = fleet
    px = base64.b64encode(bytes(181 * 181)).decode()
    imgs = [{"height": 181, "width": 181, "pixels": px}] * MAX_IMAGES
    assert MAX_IMAGES * 181 * 181 <= MAX_CLASS_PIXELS
    status_, got = request(srv, "POST", "/v1/classes", {"name": "biggest", "images": imgs}, token)
    assert status_ == 201, got
    status_, got = request(
        srv, "POST", "/v1/classes", {"name": "too big", "images": imgs + imgs[:1]}, token
    )
    assert status_ == 413


def test_quotas_per_device(tmp_path, monkeypatch):
    from metalite.fleet import classes, examples

    root = FleetRoot(tmp_path / "root", create=True)
    enroll(root, "dev")
    dev = root.db().execute("SELECT id FROM devices").fetchone()[0]
    got = examples.ingest(root, dev, [example(i) for i in range(5)], quota=3)
    assert (
        got["stored"] == 3 and len(got["rejected"]) == 2 and "quota" in got["rejected"][0]["reason"]
    )
    monkeypatch.setattr(classes, "MAX_DEVICE_CLASSES", 2)
    img = [{"height": 1, "width": 1, "pixels": "AA=="}]
    classes.share(root, dev, "one", img)
    classes.share(root, dev, "two", img)
    classes.share(root, dev, "two", img, replace=True)  # replacing is not a new class
    with pytest.raises(classes.ClassRefused) as e:
        classes.share(root, dev, "three", img)
    assert e.value.status == 429


def test_one_decoder_refuses_booleans_for_sizes_and_channels_on_both_server_paths(tmp_path):
    """An uploaded example and a shared class image are read by the one wire decoder, the device's too: ``True``
    (or ``1.0``) is not 1 for height, width or channels, and both server paths refuse with the same reason."""
    from metalite.fleet import classes, examples
    from metalite.runtime.sync.wire import WireError, decode_image, encode_image

    good = encode_image(np.full((1, 1), 7, np.uint8))
    assert decode_image(good).tolist() == [[7]] and decode_image({**good, "channels": 1}).shape == (
        1,
        1,
    )
    root = FleetRoot(tmp_path / "root", create=True)
    enroll(root, "pi")
    dev = root.db().execute("SELECT id FROM devices").fetchone()[0]
    for field, value, words in [
        ("height", True, "height and width"),
        ("width", True, "height and width"),
        ("channels", True, "channels must be"),
        ("channels", 1.0, "channels must be"),
        ("height", 1.0, "height and width"),
        ("pixels", 7, "base64 string"),
        ("pixels", "!!", "base64"),
    ]:
        bad = {**good, field: value}
        with pytest.raises(WireError, match=words):
            decode_image(bad)
        got = examples.ingest(root, dev, [{"id": "example-1", "kind": "unsure", **bad}])
        assert got["stored"] == 0 and words in got["rejected"][0]["reason"], (field, value, got)
        with pytest.raises(classes.ClassRefused, match=words) as e:
            classes.share(root, dev, "cls", [bad])
        assert e.value.status == 422 and str(e.value).startswith("image 0: ")


# ---------------------------------------------------------------------------------------------- operator's terminal
def test_fleet_status_escapes_what_devices_sent(fleet):
    srv, token = fleet
    evil = "\x1b]0;owned\x07\x1b[2J\ndev-9                v99        seen 1 s ago"
    assert (
        request(
            srv, "POST", "/v1/report", {"event": "failed", "reason": evil, "version": 1}, token
        )[0]
        == 200
    )
    lines = status_lines(status(FleetRoot(srv.root)))
    assert all(line.isprintable() for line in lines)
    assert sum(line.lstrip().startswith("dev-") for line in lines) == 1  # no forged device line
    assert any("\\x1b]0;owned\\x07" in line for line in lines)
    assert terminal_safe("tab\there") == "tab\\there"


# ---------------------------------------------------------------------------------------------- bundle file names
def _bundle_listing(tmp_path, extra: str) -> Path:
    out = tmp_path / f"bundle-{len(extra)}"
    shutil.copytree(BUNDLE, out)
    (out / extra).write_bytes(b"x")
    m = json.loads((out / "manifest.json").read_text())
    m["files"][extra] = {"sha256": sha256_file(out / extra), "bytes": 1}
    (out / "manifest.json").write_text(json.dumps(m))
    return out


@pytest.mark.parametrize(
    "name", ["state.npz", "release.json", "release.sig", "with space.bin", ".hidden"]
)
def test_one_rule_for_bundle_file_names_at_export_publish_and_the_device(tmp_path, name):
    assert bundle_file_problem(name)
    bdir = _bundle_listing(tmp_path, name)
    with pytest.raises(BundleError):
        open_bundle(bdir)
    with pytest.raises(FleetError, match="cannot publish"):
        publish(FleetRoot(tmp_path / "root", create=True), bdir)
    assert not list((tmp_path / "root" / "blobs").rglob("*.tmp"))
    files = {
        "manifest.json": {"sha256": "0" * 64, "bytes": 1},
        name: {"sha256": "1" * 64, "bytes": 1},
    }
    doc = make_release(2, "0" * 64, files, "2026-12-03T00:00:00Z")
    with pytest.raises(UpdateRefusedError, match="refused"):
        verify_release(doc, None, None, allow_unsigned=True)


# ---------------------------------------------------------------------------------------------- operator faults
def test_killed_publishes_leave_no_temporaries_behind(tmp_path):
    root = FleetRoot(tmp_path / "root", create=True)
    blobs = root.blobs.dir
    code = (
        "import sys, time\nfrom metalite.fleet import FleetRoot, publish\n"
        "from metalite.fleet import blobs\nblobs._CHUNK = 1024\n"
        "orig = blobs.os.fsync\nblobs.os.fsync = lambda fd: (time.sleep(60), orig(fd))\n"
        f"publish(FleetRoot({str(root.path)!r}), {str(BUNDLE)!r})\n"
    )
    for _ in range(3):  # publishes killed while writing a blob (they hold it locked until then)
        p = subprocess.Popen([sys.executable, "-c", code])
        deadline = time.monotonic() + 60
        while len(list(blobs.glob(".in.*.tmp"))) <= _ and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        p.kill()
        p.wait()
    left = list(blobs.glob(".in.*.tmp"))
    assert len(left) == 3
    old = time.time() - 3600
    for t in left:
        os.utime(t, (old, old))
    publish(root, BUNDLE)  # cleans its own stale temporaries first
    assert not list(blobs.glob(".in.*.tmp"))


def test_fleet_database_and_root_are_private(tmp_path):
    root = FleetRoot(tmp_path / "root", create=True)
    enroll(root, "dev")
    assert stat.S_IMODE(root.path.stat().st_mode) == 0o700
    for f in root.path.glob("fleet.sqlite*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    os.chmod(root.path / "fleet.sqlite", 0o644)  # an older root is tightened when opened
    FleetRoot(root.path)
    assert stat.S_IMODE((root.path / "fleet.sqlite").stat().st_mode) == 0o600


@contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill ``disk`` up with one file (returned; delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (64 << 10))
                f.flush()
        except OSError:
            pass
    return filler


@needs_root
def test_full_disk_answers_507_the_device_retries_later_and_the_database_stays_intact(tmp_path):
    from metalite.runtime.sync import Outbox

    with tmpfs(tmp_path / "disk", "4m") as disk:
        token = enroll(FleetRoot(disk / "root", create=True), "dev")
        srv = Server(disk / "root", tmp_path / "serve.log").start()
        try:
            ok, _ = request(srv, "POST", "/v1/examples", {"examples": [example(0)]}, token)
            assert ok == 200
            filler = fill(disk)
            answers = set()
            for i in range(1, 30):  # distinct images: each needs new space
                body = {
                    "examples": [
                        {
                            **example(i),
                            "height": 512,
                            "width": 512,
                            "pixels": base64.b64encode(os.urandom(512 * 512)).decode(),
                        }
                    ]
                }
                status_, got = request(srv, "POST", "/v1/examples", body, token)
                answers.add(status_)
                if status_ != 200:
                    assert status_ == 507 and "disk is full" in got["detail"], got
                    break
            assert 507 in answers and 500 not in answers
            home = DeviceHome(tmp_path / "home")
            Outbox(home.root / "outbox.sqlite").add("unsure", np.zeros((1, 512, 512), np.uint8) + 7)
            r = sync(home, srv.url, token, None, allow_unsigned=True, share_support=False)
            assert r.offline and r.pending == 1  # logged, kept, tried again next time
            filler.unlink()
            r = sync(home, srv.url, token, None, allow_unsigned=True, share_support=False)
            assert not r.offline and r.uploaded == 1 and r.pending == 0
        finally:
            srv.stop()
        log = (tmp_path / "serve.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        import sqlite3

        conn = sqlite3.connect(str(disk / "root" / "fleet.sqlite"))
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


@needs_root
def test_read_only_root_ends_serve_and_status_in_one_line(tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        root = FleetRoot(disk / "root", create=True)
        enroll(root, "dev")
        root.db().close()  # nothing of this process may hold a file open for writing: remount would be busy
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for args in (
            ["fleet", "status", "--root", str(disk / "root")],
            ["serve", "--root", str(disk / "root"), "--port", "0"],
        ):
            p = subprocess.run(
                [sys.executable, "-m", "metalite.tools.cli", *args],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert "Traceback" not in p.stderr, p.stderr
            if p.returncode:  # refused: exactly one line naming the problem
                assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
                assert "read-only" in p.stderr or "readonly" in p.stderr, p.stderr
            else:
                assert args[0] == "fleet" and "devices: 1" in p.stdout


# ---------------------------------------------------------------------------------------------- idle clients
def test_idle_connections_are_cut_and_never_lock_devices_out(tmp_path):
    root = tmp_path / "root"
    token = enroll(FleetRoot(root, create=True), "dev")
    srv = Server(root, tmp_path / "serve.log", args=["--header-timeout", "2"]).start()
    idle = []
    try:
        for _ in range(600):  # more than the 512 that locked everyone out before
            idle.append(socket.create_connection(("127.0.0.1", srv.port)))
        half = socket.create_connection(("127.0.0.1", srv.port))
        half.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # a slow client: headers never end
        t = time.monotonic()
        assert request(srv, "GET", "/v1/health")[0] == 200
        assert request(srv, "POST", "/v1/report", {"version": None}, token)[0] == 200
        assert time.monotonic() - t < 2
        time.sleep(3.5)
        for s in (idle[0], idle[-1], half):
            s.settimeout(5)
            assert s.recv(1) == b""  # closed by the server
    finally:
        for s in idle:
            s.close()
        srv.stop()


# ---------------------------------------------------------------------------------------------- the device
def _glyphs(n: int, seed: int) -> np.ndarray:
    """n distinct 28x28 drawings (white paper, black strokes)."""
    imgs = np.full((n, 28, 28), 255, np.uint8)
    for i in range(n):
        r = np.random.default_rng(seed * 1000 + i)
        for _ in range(3):
            y, x = r.integers(2, 20, 2)
            imgs[i, y : y + r.integers(3, 8), x : x + r.integers(3, 8)] = 0
    return imgs


@needs_root
def test_a_read_only_device_home_keeps_predicting_and_says_once_that_nothing_is_recorded(tmp_path):
    from PIL import Image

    imgs = _glyphs(4, 0)
    paths = []
    for i, img in enumerate(imgs):
        paths.append(tmp_path / f"q{i}.png")
        Image.fromarray(img).save(paths[-1])
    with tmpfs(tmp_path / "sd", "16m") as sd:
        home = DeviceHome(sd / "home")
        shutil.copytree(BUNDLE, home.versions / "1")
        (home.root / "current.json").write_text(json.dumps({"version": 1}))
        home.save(home.classifier().fit(imgs, ["a", "b", "c", "d"]))
        home.outbox().close()  # the outbox exists, as on a device that ran before
        home._outbox = None
        subprocess.run(
            ["mount", "-o", "remount,ro", str(sd)], check=True
        )  # what the kernel does after I/O errors
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "metalite.tools.cli",
                "device",
                "predict",
                *map(str, paths),
                "--home",
                str(home.root),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() and "Traceback" not in p.stderr
        said = [
            line
            for line in p.stderr.splitlines()
            if "nothing recorded" in line or "nothing is recorded" in line
        ]
        assert len(said) == 1 and "read-only" in said[0].lower(), p.stderr
        assert [line.split("\t")[1] for line in p.stdout.splitlines()] == list("abcd"), p.stdout
        # a library user gets the same: a classifier with no outbox, one warning
        from metalite.runtime.sync.outbox import OutboxUnavailableWarning

        with pytest.warns(OutboxUnavailableWarning):
            clf = DeviceHome(sd / "home").classifier()
        assert clf.outbox is None and len(clf.predict(imgs)) == 4


def test_embed_memory_stays_o_block_for_any_input_size():
    code = (
        "import numpy as np\nfrom metalite.runtime import FewShotClassifier\n"
        "def kib(k):\n  return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(k))\n"
        f"clf = FewShotClassifier({str(BUNDLE)!r}, cache_size=0)\n"
        "x = np.random.default_rng(0).integers(0, 256, (4000, 105, 105), dtype=np.uint8)\n"
        "clf.embed(x[:2]); base = kib('VmRSS'); open('/proc/self/clear_refs', 'w').write('5')\n"
        "e = clf.embed(x); print((kib('VmHWM') - base) / 1024, e.shape)\n"
    )
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/status")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    peak, shape = out.stdout.split(maxsplit=1)
    assert shape.strip() == "(4000, 64)"
    assert float(peak) < 120, (
        out.stdout
    )  # unblocked: ~390 MiB for these 4000 images (+976 MiB for 10,000)


def test_a_slow_body_gets_408_and_frees_its_connection(tmp_path):
    import threading

    import uvicorn

    from metalite.fleet.app import create_app
    from metalite.fleet.protocol import DeadlineH11Protocol
    from metalite.fleet.serve import bind

    root = FleetRoot(tmp_path / "root", create=True)
    token = enroll(root, "dev")
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(root, body_timeout=1.0), http=DeadlineH11Protocol, log_level="warning"
        )
    )
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = sock.getsockname()[1]
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(
            f"POST /v1/report HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        t = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(
            b"}"
        ):  # headers and body may come apart
            chunk = slow.recv(4096)
            if not chunk:
                break
            answer += chunk
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and "not received within 1 s" in answer, answer
        assert time.monotonic() - t < 5
        slow.close()
    finally:
        server.should_exit = True


def test_the_device_never_writes_into_a_verified_version_directory(tmp_path):
    from metalite.runtime import FewShotClassifier
    from metalite.runtime.state import load_state

    home = DeviceHome(tmp_path / "home")
    shutil.copytree(BUNDLE, home.versions / "1")
    (home.root / "current.json").write_text(json.dumps({"version": 1}))
    listed = sorted(os.listdir(home.versions / "1"))
    imgs = _glyphs(3, 1)
    legacy = (
        home.versions / "1" / "state.npz"
    )  # where older homes kept their state: still found there
    FewShotClassifier(home.bundle_dir()).fit(imgs, ["a", "b", "c"]).save(legacy)
    assert home.state_path() == legacy and home.classifier().classes == ["a", "b", "c"]
    clf = home.classifier()
    clf.add_class("d", _glyphs(1, 2))
    home.save(clf)  # moves it out
    assert home.state_path() == home.root / "states" / "1.npz" and not legacy.exists()
    assert sorted(os.listdir(home.versions / "1")) == listed
    assert load_state(home.state_path()).classes == ["a", "b", "c", "d"]
    open_bundle(home.bundle_dir())  # still exactly the verified bundle
