"""The class library end to end: a real ``metalite serve`` on 127.0.0.1, the shipped ``models/omniglot``
bundle, and real Omniglot drawings of the Greek alphabet from the test fixture (Greek is one of the 18
alphabets that bundle learned from; the characters are new to the devices). Device A learns characters
and shares one; device B, which never saw it, pulls it and must recognize the drawings A did not share
(other people's drawings of the same character)."""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fleetkit import Server
from repo_paths import REPO

from metalite.fleet import FleetRoot, enroll, publish
from metalite.runtime import FewShotClassifier
from metalite.runtime.state import load_state
from metalite.runtime.sync import (
    DeviceHome,
    FleetClient,
    ServerRefusedError,
    SyncError,
    parse_public_key,
    pull_class,
    share_class,
    shared_classes,
    sync,
)
from metalite.tools.cli import main

SHIPPED = REPO / "models" / "omniglot"
FIXTURE = REPO / "tests" / "data" / "omniglot" / "mini1.zip"


def greek() -> dict:
    """{character: [(drawer, uint8 image)]} of the fixture's Greek alphabet (20 characters x 20 drawers)."""
    out = {}
    with zipfile.ZipFile(FIXTURE) as z:
        for name in sorted(z.namelist()):
            m = re.search(r"Greek/(character\d+)/\d+_(\d+)\.png$", name)
            if m:
                img = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("L"), np.uint8)
                out.setdefault(m.group(1), []).append((int(m.group(2)), img))
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    d = tmp_path_factory.mktemp("library")
    srv = Server(d / "root", d / "serve.log").start()
    root = FleetRoot(srv.root)
    publish(root, SHIPPED, note="shipped omniglot")
    tokens = {n: enroll(root, n) for n in ("pi-a", "pi-b", "pi-c")}
    key = parse_public_key(srv.public_key())
    homes = {}
    for n, tok in tokens.items():
        homes[n] = DeviceHome(d / n)
        assert (
            sync(homes[n], srv.url, tok, key, delegate="cpu", share_support=False).update.status
            == "switched"
        )
    yield {"srv": srv, "tokens": tokens, "homes": homes, "key": key, "dir": d}
    srv.stop()


def _teach(home: DeviceHome, chars: dict, names: list, shots: int) -> None:
    clf = home.classifier(delegate="cpu")
    images, labels = [], []
    for n in names:
        images += [img for _, img in chars[n][:shots]]
        labels += [n] * shots
    clf.fit(images, labels)
    home.save(clf)


def test_a_class_shared_by_one_device_classifies_held_out_drawings_on_another(fleet):
    chars = greek()
    names = sorted(chars)
    assert len(names) == 20 and all(len(v) == 20 for v in chars.values())
    a, b = fleet["homes"]["pi-a"], fleet["homes"]["pi-b"]
    ca = FleetClient(fleet["srv"].url, fleet["tokens"]["pi-a"])
    cb = FleetClient(fleet["srv"].url, fleet["tokens"]["pi-b"])
    _teach(a, chars, names[:5], shots=2)  # A: five characters, two drawings each
    _teach(b, chars, names[5:15], shots=1)  # B: ten other characters, one drawing each
    shared = names[0]

    got = share_class(a, ca, shared)
    assert got == {"name": shared, "images": 2, "replaced": False}
    listed = shared_classes(cb)
    assert [(c["name"], c["images"], c["device"], c["version"]) for c in listed] == [
        (shared, 2, "pi-a", 1)
    ]

    before = load_state(b.state_path())
    assert shared not in before.classes
    got = pull_class(b, cb, shared, delegate="cpu")
    assert got == {"name": shared, "images": 2, "classes": 11}
    after = load_state(b.state_path())  # saved, with the shared images kept like any taught class
    assert after.classes == before.classes + [shared]
    kept = after.images[np.asarray(after.support_labels) == after.classes.index(shared)]
    st_a = load_state(
        a.state_path()
    )  # what A keeps (its 28x28 model-input pixels) is what B now keeps
    assert np.array_equal(
        kept, st_a.images[np.asarray(st_a.support_labels) == st_a.classes.index(shared)]
    )

    # the 18 drawings of the shared character that A did not share, by other people, among B's classes
    clf = b.classifier(delegate="cpu")
    held = [img for _, img in chars[shared][2:]]
    pred = FewShotClassifier.predict(clf, held)
    hits = float(np.mean([p == shared for p in pred]))
    others = [img for n in names[5:15] for _, img in chars[n][1:4]]
    other_pred = FewShotClassifier.predict(clf, others)
    other_hits = float(
        np.mean([p == n for p, n in zip(other_pred, [n for n in names[5:15] for _ in range(3)])])
    )
    print(
        f"pulled class: {hits:.3f} of 18 held-out drawings; B's own classes: {other_hits:.3f} of 30 (11-way)"
    )
    assert hits >= 0.75  # chance is 1/11
    assert other_hits >= 0.75  # the pulled class does not swallow B's own classes


def test_class_library_refusals_are_one_line_and_change_nothing(fleet):
    chars = greek()
    names = sorted(chars)
    a, c = fleet["homes"]["pi-a"], fleet["homes"]["pi-c"]
    ca = FleetClient(fleet["srv"].url, fleet["tokens"]["pi-a"])
    cc = FleetClient(fleet["srv"].url, fleet["tokens"]["pi-c"])
    if not a.state_path().is_file():
        _teach(a, chars, names[:5], shots=2)
    _teach(c, chars, [names[0], names[1], names[16]], shots=1)
    state_before = c.state_path().read_bytes()

    with pytest.raises(ServerRefusedError, match="HTTP 404 no shared class named"):
        pull_class(c, cc, "no such class", delegate="cpu")
    with pytest.raises(SyncError, match="no class 'nope'"):
        share_class(c, cc, "nope")
    if not any(x["name"] == names[1] for x in shared_classes(ca)):
        share_class(a, ca, names[1])
    with pytest.raises(ServerRefusedError, match="HTTP 409 .*already shared by another device"):
        share_class(c, cc, names[1])  # C taught a class of that name too, but A shared it first
    assert c.state_path().read_bytes() == state_before
    with pytest.raises(ServerRefusedError, match="HTTP 409 .*pass replace"):
        share_class(a, ca, names[1])
    assert share_class(a, ca, names[1], replace=True)["replaced"] is True
    if not any(x["name"] == names[0] for x in shared_classes(ca)):
        share_class(a, ca, names[0])
    with pytest.raises(SyncError, match="already has a class"):
        pull_class(c, cc, names[0], delegate="cpu")  # C taught names[0] itself
    assert c.state_path().read_bytes() == state_before
    got = pull_class(
        c, cc, names[0], replace=True, delegate="cpu"
    )  # A's two drawings replace C's one
    assert got["images"] == 2 and load_state(c.state_path()).classes == [
        names[1],
        names[16],
        names[0],
    ]

    # too many images, bad pixels: refused by the server with the reason, nothing stored
    img = {"height": 28, "width": 28, "pixels": base64.b64encode(bytes(784)).decode()}
    for body, status, words in (
        ({"name": "big", "images": [img] * 65}, 413, "at most 64 images"),
        ({"name": "bad", "images": [{**img, "pixels": "!!"}]}, 422, "base64"),
        ({"name": "", "images": [img]}, 422, "non-empty string"),
    ):
        req = urllib.request.Request(
            fleet["srv"].url + "/v1/classes",
            data=json.dumps(body).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {fleet['tokens']['pi-c']}",
                "Content-Type": "application/json",
            },
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == status and words in json.loads(err.value.read())["detail"]
    assert {x["name"] for x in shared_classes(cc)} == {names[0], names[1]}


def test_sync_cli_shares_lists_and_pulls_classes(fleet):
    chars = greek()
    names = sorted(chars)
    srv, tokens = fleet["srv"], fleet["tokens"]
    a, b = fleet["homes"]["pi-a"], fleet["homes"]["pi-b"]
    if not a.state_path().is_file():
        _teach(a, chars, names[:5], shots=2)
    if not b.state_path().is_file():
        _teach(b, chars, names[5:15], shots=1)

    def run(name, *extra):
        return CliRunner().invoke(
            main,
            [
                "sync",
                "--server",
                srv.url,
                "--token",
                tokens[name],
                "--pubkey",
                str(srv.root / "public_key.txt"),
                "--home",
                str(fleet["homes"][name].root),
                "--delegate",
                "cpu",
                "--no-share-support",
                *extra,
            ],
        )

    r = run("pi-a", "--share-class", names[2])
    assert r.exit_code == 0 and f"shared class {names[2]!r} (2 images)" in r.stdout, r.output
    r = run("pi-b", "--list-classes", "--pull-class", names[2])
    assert r.exit_code == 0, r.output
    assert (
        f"pulled class {names[2]!r} (2 images)" in r.stdout
        and f"{names[2]}  2 images, from pi-a (v1)" in r.stdout
    )
    assert names[2] in load_state(b.state_path()).classes
    st = CliRunner().invoke(main, ["fleet", "status", "--root", str(srv.root)])
    assert st.exit_code == 0 and f"{names[2]} (2 images, pi-a)" in st.stdout, st.output
    assert re.search(r"class library: \d+ shared classes: ", st.stdout), st.stdout
    r = run("pi-b", "--pull-class", names[2])
    assert r.exit_code == 1 and r.output.count("\n") <= 2 and "already has a class" in r.output, (
        r.output
    )
    r = run("pi-b", "--pull-class", "no such class")
    assert r.exit_code == 1 and "HTTP 404" in r.output, r.output


@pytest.mark.slow
def test_a_class_shared_from_another_bundle_is_the_class_taught_here(tmp_path):
    """A runs v1 (``models/glyphs``), B runs v2 (``models/omniglot``: another backbone, so only images can
    travel). B pulls two glyph classes of the held-out test split that A shared: B's classifier is then the
    one B gets by teaching those images itself, it classifies A's held-out images of them, and B's next
    sync does not send them back as its own support images."""
    from metalite.training.datasets import load_data

    glyphs = load_data("glyphs", 28, "test")
    shots, a_classes, b_classes = (
        5,
        [100, 200],
        [150, 250, 350, 450],
    )  # spread over the 731 test classes
    srv = Server(tmp_path / "root", tmp_path / "serve.log").start()
    try:
        root, key = FleetRoot(srv.root), parse_public_key(srv.public_key())
        homes = {}
        for name, bundle in (("pi-a", REPO / "models" / "glyphs"), ("pi-b", SHIPPED)):
            publish(root, bundle)
            token = enroll(root, name)
            homes[name] = (DeviceHome(tmp_path / name), FleetClient(srv.url, token), token)
            assert (
                sync(homes[name][0], srv.url, token, key, delegate="cpu").update.status
                == "switched"
            )
        (a, ca, _), (b, cb, tb) = homes["pi-a"], homes["pi-b"]
        assert (a.version, b.version) == (1, 2)
        support = {
            glyphs.class_names[c]: glyphs.images[glyphs.indices_of(c)[:shots]]
            for c in a_classes + b_classes
        }
        for home, classes in ((a, a_classes), (b, b_classes)):
            clf = home.classifier(delegate="cpu")
            clf.fit({glyphs.class_names[c]: support[glyphs.class_names[c]] for c in classes})
            home.save(clf)
        shared = [glyphs.class_names[c] for c in a_classes]
        for name in shared:
            share_class(a, ca, name)
            pull_class(b, cb, name, delegate="cpu")

        clf = b.classifier(delegate="cpu")
        taught = FewShotClassifier(b.bundle_dir(), delegate="cpu").fit(
            {n: support[n] for n in clf.classes}
        )
        held = {
            glyphs.class_names[c]: glyphs.images[glyphs.indices_of(c)[shots:]]
            for c in b_classes + a_classes
        }
        x = np.concatenate(list(held.values()))
        np.testing.assert_allclose(
            FewShotClassifier.predict_proba(clf, x), taught.predict_proba(x), atol=1e-5
        )
        right = np.array(
            [
                p == t
                for p, t in zip(
                    FewShotClassifier.predict(clf, x), [n for n, v in held.items() for _ in v]
                )
            ]
        )
        pulled = np.arange(len(x)) >= len(x) - sum(len(held[n]) for n in shared)
        print(
            f"\nB (v2) on the pulled classes' {pulled.sum()} held-out images: {right[pulled].mean():.3f}; "
            f"on all {len(x)}: {right.mean():.3f} (6 classes, chance 0.167)"
        )
        assert right[pulled].mean() >= 0.7 and right.mean() >= 0.7
        assert sync(b, srv.url, tb, key, delegate="cpu").shared == shots * len(b_classes)
    finally:
        srv.stop()
