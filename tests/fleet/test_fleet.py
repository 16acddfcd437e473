"""The fleet end to end: a real ``metalite serve`` subprocess on 127.0.0.1, real SQLite, real int8 bundles.

Bundles: v1 and v2 are different random Conv4 backbones (16-d and 24-d embeddings) written by
``write_bundle``, so an update really re-embeds the device's support images; "bad" is v2 with a head
that cannot tell classes apart (it verifies, but must fail the device's health check).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fleetkit import CuttingProxy, Server, shared_bundles, write_pngs
from runtime_kit import shapes

from metalite.fleet import (
    FleetRoot,
    enroll,
    export_bundle,
    export_model,
    iter_examples,
    latest_offer,
    list_devices,
    publish,
    revoke,
    rollback,
)
from metalite.runtime import FewShotClassifier
from metalite.runtime.bundle import open_bundle
from metalite.runtime.state import load_state
from metalite.runtime.sync import (
    DeviceHome,
    FleetClient,
    ServerRefusedError,
    ServerUnreachableError,
    apply_offer,
    parse_public_key,
    sync,
    upload_outbox,
)
from metalite.tools.cli import main

CLASSES = [f"shape{k}" for k in range(5)]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return shared_bundles(tmp_path_factory)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "root", tmp_path / "serve.log").start()
    yield srv
    srv.stop()


def _sync(home, srv, token, key="server", **kw):
    """One sync; the outbox tests count examples, so support sets are not shared unless asked."""
    key = parse_public_key(srv.public_key()) if key == "server" else key
    kw.setdefault("share_support", False)
    return sync(home, kw.pop("url", srv.url), token, key, delegate="cpu", timeout=30, **kw)


def _adapted_device(home_dir: Path, srv: Server, token: str) -> DeviceHome:
    """A device home synced to the latest version with the five shape classes learned (5 images each)."""
    home = DeviceHome(home_dir)
    assert _sync(home, srv, token).update.status == "switched"
    clf = home.classifier(delegate="cpu")
    sup, lab = shapes(range(5), 5, seed=1)
    clf.fit(sup, lab)
    home.save(clf)
    return home


def _accuracy(clf, seed=3) -> float:
    qry, qlab = shapes(range(5), 10, seed=seed)
    return float(np.mean([p == t for p, t in zip(FewShotClassifier.predict(clf, qry), qlab)]))


# ----------------------------------------------------------------------------- the whole flow
def test_enroll_publish_sync_adapt_outbox_upload_then_switch_keeping_classes(
    bundles, server, tmp_path
):
    cli, root = CliRunner(), str(server.root)
    r = cli.invoke(main, ["fleet", "enroll", "pi-1", "--root", root])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip()
    assert token.startswith("mlt_") and len(token) > 40
    db_bytes = b"".join(p.read_bytes() for p in server.root.glob("fleet.sqlite*"))
    assert token.encode() not in db_bytes  # stored as a hash only
    r = cli.invoke(
        main, ["fleet", "publish", str(bundles["v1"]), "--root", root, "--note", "first"]
    )
    assert r.exit_code == 0 and "published v1" in r.stdout, r.output

    home_dir = tmp_path / "pi-1"
    sync_args = [
        "sync",
        "--server",
        server.url,
        "--token",
        token,
        "--pubkey",
        str(server.root / "public_key.txt"),
        "--home",
        str(home_dir),
        "--delegate",
        "cpu",
        "--no-share-support",
    ]
    r = cli.invoke(main, sync_args)
    assert r.exit_code == 0 and "switched to v1" in r.stdout, r.output
    sup, lab = shapes(range(5), 5, seed=1)
    write_pngs(tmp_path / "support", sup, lab)
    r = cli.invoke(
        main,
        [
            "device",
            "adapt",
            str(tmp_path / "support"),
            "--home",
            str(home_dir),
            "--delegate",
            "cpu",
        ],
    )
    assert r.exit_code == 0 and "5 classes" in r.stdout, r.output

    # unsure predictions (below the threshold) go to the outbox, confident ones do not
    home = DeviceHome(home_dir)
    clf = home.classifier(delegate="cpu")
    assert clf.classes == CLASSES and clf.version == 1
    qry, _ = shapes(range(5), 8, seed=2)
    conf = FewShotClassifier.predict_proba(clf, qry).max(axis=1)  # the plain method records nothing
    clf.threshold = float(np.median(conf))
    proba = clf.predict_proba(qry)
    unsure = np.flatnonzero(proba.max(axis=1) < clf.threshold)
    assert 0 < len(unsure) < len(qry)
    rows = home.outbox().oldest(1000)
    assert len(rows) == len(unsure) and {r["kind"] for r in rows} == {"unsure"}
    assert [r["predicted"] for r in rows] == [clf.classes[k] for k in proba[unsure].argmax(axis=1)]
    assert all(
        np.array_equal(np.frombuffer(r["pixels"], np.uint8).reshape(28, 28), qry[i])
        for r, i in zip(rows, unsure)
    )
    clf.correct(qry[0], "shape0")  # a user's correction: recorded and learned
    home.save(clf)
    sent = {r["id"]: r for r in home.outbox().oldest(1000)}
    assert len(sent) == len(unsure) + 1

    r = cli.invoke(main, sync_args)
    assert r.exit_code == 0 and f"uploaded {len(sent)} examples" in r.stdout, r.output
    assert home.outbox().pending() == 0
    got = {e["example_id"]: e for e in iter_examples(FleetRoot(server.root))}
    assert set(got) == set(sent)
    for i, e in got.items():
        assert (
            e["device"] == "pi-1"
            and e["kind"] == sent[i]["kind"]
            and e["label"] == sent[i]["label"]
        )
        assert np.array_equal(
            e["image"], np.frombuffer(sent[i]["pixels"], np.uint8).reshape(28, 28)
        )
    assert [e["label"] for e in got.values() if e["kind"] == "correction"] == ["shape0"]

    # v2 (another backbone, another embedding size): the device re-embeds its support images and keeps its classes
    acc_v1 = _accuracy(clf)
    r = cli.invoke(main, ["fleet", "publish", str(bundles["v2"]), "--root", root])
    assert r.exit_code == 0 and "published v2" in r.stdout, r.output
    r = cli.invoke(main, sync_args)
    assert r.exit_code == 0 and "switched to v2" in r.stdout, r.output
    clf2 = DeviceHome(home_dir).classifier(delegate="cpu")
    assert clf2.version == 2 and clf2.classes == CLASSES and clf2.embedding_dim == 24
    st = load_state(DeviceHome(home_dir).state_path())
    assert st.images.shape == (26, 28, 28) and st.support.shape == (26, 24)
    acc_v2 = _accuracy(clf2)
    assert acc_v2 >= 0.8, (acc_v1, acc_v2)
    assert sorted(os.listdir(home_dir / "versions")) == ["1", "2"]  # the previous version is kept

    r = cli.invoke(main, ["fleet", "status", "--root", root, "--json"])
    dev = json.loads(r.stdout)["devices"][0]
    assert (dev["name"], dev["version"], dev["examples"], dev["last_event"]) == (
        "pi-1",
        2,
        len(sent),
        "switched",
    )
    r = cli.invoke(main, ["fleet", "status", "--root", root])
    assert r.exit_code == 0 and "pi-1" in r.stdout and "v2" in r.stdout

    # sharing the support set (the default): each image once, with its label, however often the device syncs
    for expected in (26, 0):
        r = cli.invoke(main, sync_args[:-1])
        assert r.exit_code == 0 and f"uploaded {expected} examples" in r.stdout, r.output
    shared = list(iter_examples(FleetRoot(server.root), kinds=["support"]))
    assert len(shared) == 26 and sorted({e["label"] for e in shared}) == CLASSES
    assert sum(np.array_equal(e["image"], qry[0]) and e["label"] == "shape0" for e in shared) == 1


# ----------------------------------------------------------------------------- refusals
def test_bad_updates_are_refused_while_the_old_version_keeps_serving(bundles, server, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    fl = FleetRoot(server.root)
    token = enroll(fl, "pi")
    publish(fl, bundles["v1"])
    v1_offer = latest_offer(fl)
    home = _adapted_device(tmp_path / "home", server, token)
    qry, _ = shapes(range(5), 6, seed=4)
    before = home.classifier(delegate="cpu").predict(qry)
    publish(fl, bundles["v2"])

    def still_v1(result, words):
        assert result.update.status in ("refused", "failed") and words in result.update.reason, (
            result.update
        )
        assert (
            home.version == 1
            and sorted(os.listdir(home.versions)) == ["1"]
            and not list(home.tmp.iterdir())
        )
        assert home.classifier(delegate="cpu").predict(qry) == before
        dev = next(d for d in list_devices(fl) if d["name"] == "pi")
        assert (
            dev["version"] == 1
            and dev["last_event"] == result.update.status
            and words in dev["last_reason"]
        )

    wrong = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    still_v1(_sync(home, server, token, key=wrong), "signature does not match")
    r = CliRunner().invoke(
        main,
        [
            "sync",
            "--server",
            server.url,
            "--token",
            token,
            "--pubkey",
            wrong.hex(),
            "--home",
            str(home.root),
            "--delegate",
            "cpu",
        ],
    )
    assert r.exit_code == 3 and "refused" in r.stdout, r.output

    sha = (
        fl.db()
        .execute("SELECT sha256 FROM release_files WHERE version = 2 AND name = 'backbone.tflite'")
        .fetchone()[0]
    )
    blob = fl.blobs.path(sha)
    original = blob.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF
    blob.write_bytes(bytes(tampered))
    still_v1(_sync(home, server, token), "does not match the signed")
    blob.write_bytes(original[: len(original) // 2])
    still_v1(_sync(home, server, token), "the signed release says")
    blob.write_bytes(original)
    proxy = CuttingProxy(
        server.port, limit=8000
    )  # the connection dies inside backbone.tflite's body
    try:
        still_v1(_sync(home, server, token, url=proxy.url), "truncated download")
    finally:
        proxy.close()

    signature = fl.db().execute("SELECT signature FROM releases WHERE version = 2").fetchone()[0]
    fl.db().execute("UPDATE releases SET signature = '' WHERE version = 2")
    still_v1(_sync(home, server, token), "unsigned")
    fl.db().execute("UPDATE releases SET signature = ? WHERE version = 2", (signature,))
    still_v1(_sync(home, server, token, key=None), "no server public key")

    publish(
        fl, bundles["bad"]
    )  # v3: verifies and is signed, but its head cannot tell the classes apart
    still_v1(_sync(home, server, token), "health check failed")

    rollback(fl, 2)  # v4 = v2's files
    r = _sync(home, server, token)
    assert r.update.status == "switched" and home.version == 4
    assert r.update.health["after"] >= r.update.health["before"] - 0.1
    clf = home.classifier(delegate="cpu")
    assert clf.classes == CLASSES and _accuracy(clf) >= 0.8

    client = FleetClient(server.url, token)
    key = parse_public_key(server.public_key())
    old = apply_offer(
        home, client, v1_offer, key, delegate="cpu"
    )  # a replayed, genuinely signed older release
    assert old.status == "refused" and "older" in old.reason and home.version == 4
    back = apply_offer(home, client, v1_offer, key, allow_older=True, delegate="cpu")
    assert back.status == "switched" and home.version == 1
    assert home.classifier(delegate="cpu").classes == CLASSES


def test_a_state_without_images_is_not_carried_over_and_the_device_says_why(
    bundles, server, tmp_path
):
    from runtime_kit import write_v1_state

    fl = FleetRoot(server.root)
    token = enroll(fl, "old-pi")
    publish(fl, bundles["v1"])
    home = _adapted_device(tmp_path / "home", server, token)
    write_v1_state(home.classifier(delegate="cpu"), home.state_path())  # as metalite 0.1 saved it
    publish(fl, bundles["v2"])
    r = _sync(home, server, token)
    assert (
        r.update.status == "refused" and "state format 1" in r.update.reason and home.version == 1
    )
    assert "adapt again" in list_devices(fl)[0]["last_reason"]


# ----------------------------------------------------------------------------- crashes and outages
def _count(root: Path) -> int:
    conn = sqlite3.connect(f"file:{root / 'fleet.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT count(*) FROM examples").fetchone()[0]
    finally:
        conn.close()


def _half_sent_upload(port: int, token: str, ids: list) -> socket.socket:
    """Send the headers and half the body of a valid upload, then nothing more (the server waits for the rest)."""
    body = json.dumps(
        {
            "examples": [
                {
                    "id": i,
                    "kind": "unsure",
                    "height": 28,
                    "width": 28,
                    "pixels": base64.b64encode(bytes(784)).decode(),
                }
                for i in ids
            ]
        }
    ).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        f"POST /v1/examples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    return s


def test_server_killed_mid_upload_loses_and_duplicates_nothing(server, tmp_path):
    fl = FleetRoot(server.root)
    token = enroll(fl, "pi")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "config.json").write_text(json.dumps({"outbox_capacity": 5000}))
    home = DeviceHome(tmp_path / "home")
    outbox = home.outbox()
    pixels = np.random.default_rng(0).integers(0, 256, (2500, 28, 28), dtype=np.uint8)
    ids = outbox.add(
        "unsure",
        pixels,
        predicted=["shape1"] * 2500,
        confidences=np.linspace(0, 0.5, 2500),
        version=1,
    )
    partial_ids = [f"partial{i:04d}" for i in range(32)]
    half = _half_sent_upload(server.port, token, partial_ids)

    failure = []

    def upload():
        try:
            upload_outbox(outbox, FleetClient(server.url, token, timeout=30))
        except Exception as e:  # noqa: BLE001 - the test inspects it
            failure.append(e)

    t = threading.Thread(target=upload)
    t.start()
    deadline = time.monotonic() + 120
    while _count(server.root) < 600 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.stop(signal.SIGKILL)
    t.join(120)
    half.close()
    assert failure and isinstance(failure[0], ServerUnreachableError), (
        failure
    )  # it really was cut mid-stream
    stored, acked = _count(server.root), 2500 - outbox.pending()
    assert (
        600 <= stored and acked <= stored <= acked + 64
    )  # at most the one batch whose answer was lost

    server.start()  # same root, same port
    uploaded, duplicates = upload_outbox(outbox, FleetClient(server.url, token))
    assert outbox.pending() == 0
    assert duplicates == stored - acked and uploaded == 2500 - stored
    rows = list(iter_examples(FleetRoot(server.root)))
    assert sorted(r["example_id"] for r in rows) == sorted(
        ids
    )  # every example once, none of the half-sent ones
    by_id = dict(zip(ids, pixels))
    assert all(np.array_equal(r["image"], by_id[r["example_id"]]) for r in rows)
    assert FleetRoot(server.root).db().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_offline_device_keeps_its_outbox_across_a_restart_and_drains_it_later(
    bundles, server, tmp_path
):
    fl = FleetRoot(server.root)
    token = enroll(fl, "pi")
    publish(fl, bundles["v1"])
    home = _adapted_device(tmp_path / "home", server, token)
    server.stop()
    qry, _ = shapes(range(5), 4, seed=5)
    np.save(tmp_path / "qry.npy", qry)
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from metalite.runtime.sync import DeviceHome
        home = DeviceHome({str(home.root)!r})
        clf = home.classifier(delegate="cpu")
        clf.threshold = 1.01  # everything is 'unsure'
        q = np.load({str(tmp_path / "qry.npy")!r})
        clf.predict(q)
        clf.correct(q[0], "shape0", learn=False)
        os.kill(os.getpid(), signal.SIGKILL)  # no clean shutdown
    """)
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]

    r = _sync(DeviceHome(home.root), server, token)  # the server is down
    assert r.offline and r.pending == len(qry) + 1
    assert DeviceHome(home.root).outbox().pending() == len(qry) + 1
    server.start()
    r = _sync(DeviceHome(home.root), server, token)
    assert not r.offline and r.uploaded == len(qry) + 1 and r.pending == 0
    kinds = sorted(e["kind"] for e in iter_examples(fl))
    assert kinds == ["correction"] + ["unsure"] * len(qry)


# ----------------------------------------------------------------------------- many devices
def _all_at_once(fn, n: int) -> list:
    barrier, out = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def test_fifty_devices_sync_at_once(bundles, server, tmp_path):
    n = 50
    fl = FleetRoot(server.root)
    publish(fl, bundles["v1"])
    tokens = [enroll(fl, f"dev{i:02d}") for i in range(n)]
    homes = [DeviceHome(tmp_path / f"dev{i:02d}") for i in range(n)]
    rng = np.random.default_rng(1)
    for h in homes:
        h.outbox().add("unsure", rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))

    t0 = time.perf_counter()
    first = _all_at_once(lambda i: _sync(homes[i], server, tokens[i]), n)
    t_first = time.perf_counter() - t0
    assert all(
        not isinstance(r, Exception) and not r.offline and r.uploaded == 10 and r.running == 1
        for r in first
    ), [r for r in first if isinstance(r, Exception) or r.running != 1][:3]
    sup, lab = shapes(range(5), 3, seed=1)
    for h in homes:
        h.save(h.classifier(delegate="cpu").fit(sup, lab))
    publish(fl, bundles["v2"])
    t0 = time.perf_counter()
    second = _all_at_once(lambda i: _sync(homes[i], server, tokens[i]), n)
    t_second = time.perf_counter() - t0
    assert all(
        not isinstance(r, Exception) and r.update.status == "switched" and r.running == 2
        for r in second
    ), [r for r in second if isinstance(r, Exception) or r.running != 2][:3]
    assert all(h.classifier(delegate="cpu").classes == CLASSES for h in homes[:5])
    devices = list_devices(fl)
    assert len(devices) == n and all(d["version"] == 2 and d["examples"] == 10 for d in devices)
    assert sum(1 for _ in iter_examples(fl)) == 10 * n
    print(
        f"\n50 devices: first sync (install v1 + upload 10 each) {t_first:.1f} s, "
        f"update to v2 (download, re-embed, switch) {t_second:.1f} s"
    )


# ----------------------------------------------------------------------------- the API's guards
def _request(srv, method, path, body=None, token=None, headers=None):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(srv.url + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _example(i, n_bytes=784, **kw):
    return {
        "id": f"ex{i:08d}",
        "kind": "unsure",
        "height": 28,
        "width": 28,
        "pixels": base64.b64encode(bytes(n_bytes)).decode(),
        **kw,
    }


def test_tokens_revocation_size_limits_and_blob_names(bundles, server, tmp_path):
    fl = FleetRoot(server.root)
    publish(fl, bundles["v1"])
    token, other = enroll(fl, "pi"), enroll(fl, "pi-2")
    assert _request(server, "GET", "/v1/health")[0] == 200
    assert _request(server, "GET", "/v1/releases/latest")[0] == 401
    assert _request(server, "POST", "/v1/examples", {"examples": [_example(1)]})[0] == 401
    assert (
        _request(server, "POST", "/v1/examples", {"examples": [_example(1)]}, token="mlt_guess")[0]
        == 401
    )
    assert _request(server, "GET", "/v1/releases/latest", token=token)[0] == 200

    revoke(fl, "pi-2")
    assert _request(server, "GET", "/v1/releases/latest", token=other)[0] == 403
    with pytest.raises(ServerRefusedError, match="revoked") as exc:
        _sync(DeviceHome(tmp_path / "pi-2"), server, other)
    assert exc.value.status == 403
    r = CliRunner().invoke(
        main,
        [
            "sync",
            "--server",
            server.url,
            "--token",
            other,
            "--pubkey",
            server.public_key(),
            "--home",
            str(tmp_path / "pi-2"),
        ],
    )
    assert r.exit_code == 1 and "revoked" in r.output and len(r.output.strip().splitlines()) == 1
    renewed = enroll(fl, "pi-2", rotate=True)
    assert _request(server, "GET", "/v1/releases/latest", token=renewed)[0] == 200
    assert _request(server, "GET", "/v1/releases/latest", token=other)[0] == 401

    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=30
    ) as s:  # refused on the header alone
        s.sendall(
            f"POST /v1/examples HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {5 << 20}\r\n\r\n".encode()
        )
        assert s.recv(4096).split(b" ")[1] == b"413"
    # no Content-Length (chunked): 16 valid 512x512 examples, 5.6 MB; the server stops reading at 4 MiB and
    # answers 413 (the client may see that, or the reset that follows when it is still sending)
    large = {
        "examples": [_example(100 + i, n_bytes=512 * 512, height=512, width=512) for i in range(16)]
    }
    data = json.dumps(large).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(
            "POST",
            "/v1/examples",
            body=iter([data[i : i + 65536] for i in range(0, len(data), 65536)]),
            headers={"Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"},
        )
        assert conn.getresponse().status == 413
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        conn.close()
    assert fl.db().execute("SELECT count(*) FROM examples").fetchone()[0] == 0
    assert (
        _request(
            server,
            "POST",
            "/v1/examples",
            {"examples": [_example(i) for i in range(257)]},
            token=token,
        )[0]
        == 413
    )

    status, body = _request(
        server,
        "POST",
        "/v1/examples",
        {"examples": [_example(1, label="a"), _example(2, n_bytes=10), {"id": 5}]},
        token=token,
    )
    answer = json.loads(body)
    assert status == 200 and answer["stored"] == 1 and len(answer["rejected"]) == 2
    assert "784" in answer["rejected"][0]["reason"] and answer["ids"] == [
        "ex00000001",
        "ex00000002",
    ]
    answer = json.loads(
        _request(
            server, "POST", "/v1/examples", {"examples": [_example(1, label="a")]}, token=token
        )[1]
    )
    assert (answer["stored"], answer["duplicates"]) == (0, 1)  # a retry is a no-op

    files = fl.db().execute("SELECT sha256 FROM release_files").fetchall()
    assert _request(server, "GET", f"/v1/blobs/{files[0][0]}", token=token)[0] == 200
    image_sha = fl.db().execute("SELECT image_sha256 FROM examples").fetchone()[0]
    for path in (
        f"/v1/blobs/{image_sha}",
        "/v1/blobs/" + "0" * 64,
        "/v1/blobs/..%2F..%2Ffleet.sqlite",
        "/v1/blobs/../../fleet.sqlite",
    ):
        assert _request(server, "GET", path, token=token)[0] == 404, path


# ----------------------------------------------------------------------------- admin
def test_publish_keeps_the_model_directory_and_admin_errors_are_one_line(bundles, tmp_path):
    model = tmp_path / "model"
    (model / "checkpoints").mkdir(parents=True)
    (model / "config.json").write_text(
        json.dumps({"format": "metalite-model", "format_version": 1})
    )
    (model / "backbone.weights.h5").write_bytes(os.urandom(3000))
    (model / "checkpoints" / "ckpt-1.index").write_bytes(b"x")
    fl = FleetRoot(tmp_path / "root", create=True)
    r = publish(fl, bundles["v1"], model_dir=model, note="with model")
    assert r["version"] == 1 and r["model_files"] == 2
    out = export_model(fl, 1, tmp_path / "restored")
    assert sorted(p.name for p in out.rglob("*")) == ["backbone.weights.h5", "config.json"]
    assert (out / "backbone.weights.h5").read_bytes() == (
        model / "backbone.weights.h5"
    ).read_bytes()
    assert (
        open_bundle(export_bundle(fl, 1, tmp_path / "bundle")).manifest_sha256
        == r["manifest_sha256"]
    )
    assert rollback(fl, 1)["model_files"] == 2

    cli = CliRunner()
    missing = tmp_path / "nowhere"
    cases = [
        (["fleet", "status", "--root", str(missing)], "not a fleet root"),
        (["fleet", "revoke", "ghost", "--root", str(fl.path)], "no device named 'ghost'"),
        (["fleet", "enroll", "a/b", "--root", str(fl.path)], "device name 'a/b'"),
        (["fleet", "publish", str(tmp_path / "model"), "--root", str(fl.path)], "cannot publish"),
        (
            [
                "fleet",
                "publish",
                str(bundles["v1"]),
                "--root",
                str(fl.path),
                "--model",
                str(tmp_path),
            ],
            "not a metalite model directory",
        ),
        (["fleet", "rollback", "--root", str(fl.path), "--to", "9"], "no release v9"),
        (
            ["sync", "--server", "ftp://x", "--token", "t", "--home", str(tmp_path / "h")],
            "http:// or https://",
        ),
        (
            [
                "sync",
                "--server",
                "http://127.0.0.1:9",
                "--token",
                "t",
                "--pubkey",
                "zz",
                "--home",
                str(tmp_path / "h"),
            ],
            "64 hex digits",
        ),
        (["device", "status", "--home", str(tmp_path / "h2")], None),
        (
            ["device", "predict", str(model / "config.json"), "--home", str(tmp_path / "h3")],
            "no bundle yet",
        ),
    ]
    for args, words in cases:
        r = cli.invoke(main, args)
        if words is None:
            assert r.exit_code == 0 and "no bundle yet" in r.output, r.output
            continue
        assert r.exit_code == 1 and words in r.output and len(r.output.strip().splitlines()) == 1, (
            args,
            r.output,
        )
    assert not missing.exists()
    enroll(fl, "pi")
    r = cli.invoke(main, ["fleet", "enroll", "pi", "--root", str(fl.path)])
    assert r.exit_code == 1 and "already enrolled" in r.output
    with (
        socket.socket() as s
    ):  # a port nobody listens on: the device is offline, which is not an error
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli.invoke(
        main,
        [
            "sync",
            "--server",
            f"http://127.0.0.1:{port}",
            "--token",
            "t",
            "--pubkey",
            "0" * 64,
            "--home",
            str(tmp_path / "h"),
        ],
    )
    assert r.exit_code == 0 and "offline" in r.stdout, r.output
