"""The device side of the fleet without a server: state v2 (kept support images), outbox, reporting
classifier, release checks, health check, device home, and ``metalite.runtime.sync`` without ``cryptography``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from fleetkit import shared_bundles
from runtime_kit import installed_home, shapes, write_v1_state

from metalite.runtime import FewShotClassifier, StateError
from metalite.runtime import head as headlib
from metalite.runtime import state as statelib
from metalite.runtime.sync import (
    DeviceHome,
    Outbox,
    ReportingClassifier,
    SyncError,
    UpdateRefusedError,
    parse_public_key,
    support_accuracy,
    sync,
    verify_release,
)
from metalite.runtime.sync.release import make_release


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return shared_bundles(tmp_path_factory)


# ----------------------------------------------------------------------------- state v2
def test_state_keeps_support_images_that_reembed_to_the_same_embeddings(bundles, tmp_path):
    clf = FewShotClassifier(bundles["v1"], delegate="cpu")
    sup, lab = shapes(range(4), 3, seed=1)
    clf.fit(sup, lab)
    extra, _ = shapes([4], 2, seed=2)
    clf.add_class("shape4", extra)
    clf.add_class("shape0", extra[:1])
    clf.remove_class("shape1")
    clf.save(tmp_path / "s.npz")
    meta = json.loads(str(np.load(tmp_path / "s.npz")["meta"]))
    assert meta["format_version"] == 2 and meta["images"] is True
    st = statelib.load_state(tmp_path / "s.npz")
    assert st.classes == ["shape0", "shape2", "shape3", "shape4"]
    assert st.images.dtype == np.uint8 and st.images.shape == (len(st.support), 28, 28) == (
        12,
        28,
        28,
    )
    lab = np.array(lab)
    expect = np.concatenate(
        [sup[lab == "shape0"], extra[:1], sup[lab == "shape2"], sup[lab == "shape3"], extra]
    )
    assert np.array_equal(
        st.images, expect
    )  # 28x28 uint8 input is kept exactly, rows aligned with support
    fresh = FewShotClassifier(bundles["v1"], delegate="cpu", cache_size=0)
    assert np.allclose(
        fresh.embed(st.images), st.support, atol=1e-6
    )  # same int8 input -> same embeddings
    loaded = FewShotClassifier.load(bundles["v1"], tmp_path / "s.npz", delegate="cpu")
    for a, b in zip(loaded.support_images().values(), clf.support_images().values()):
        assert np.array_equal(a, b)


def test_to_pixels_inverts_to_model_input_for_any_range_and_polarity():
    from metalite.runtime.preprocess import to_model_input, to_pixels

    img = np.random.default_rng(0).integers(0, 256, (6, 28, 28)).astype(np.uint8)
    x = to_model_input(img, (28, 28))
    assert np.array_equal(to_pixels(x), img)
    assert np.array_equal(to_pixels(0.2 + 0.6 * x, True, (0.2, 0.8)), img)
    assert np.array_equal(to_pixels(to_model_input(img, (28, 28), invert=False), False), img)


def test_version_1_state_still_loads_and_is_saved_without_images(bundles, tmp_path):
    clf = FewShotClassifier(bundles["v1"], delegate="cpu")
    sup, lab = shapes(range(3), 2, seed=1)
    clf.fit(sup, lab)
    write_v1_state(clf, tmp_path / "v1.npz")
    assert json.loads(str(np.load(tmp_path / "v1.npz")["meta"]))["format_version"] == 1
    old = FewShotClassifier.load(bundles["v1"], tmp_path / "v1.npz", delegate="cpu")
    assert old.predict(sup) == clf.predict(sup) and all(
        v is None for v in old.support_images().values()
    )
    old.add_class(
        "new", sup[:1]
    )  # the new class's images are known, the old ones are not: saved without any
    old.save(tmp_path / "again.npz")
    st = statelib.load_state(tmp_path / "again.npz")
    assert st.images is None and st.classes == ["shape0", "shape1", "shape2", "new"]
    with pytest.raises(StateError, match="support images must be uint8"):
        statelib.save_state(
            tmp_path / "x.npz",
            statelib.State(
                st.bundle_manifest_sha256,
                st.classes,
                st.support,
                st.support_labels,
                st.head,
                {},
                np.zeros((1, 28, 28), np.uint8),
            ),
        )
    assert not (tmp_path / "x.npz").exists()


# ----------------------------------------------------------------------------- outbox
def test_outbox_is_bounded_persistent_and_forgets_only_what_it_is_told(tmp_path):
    px = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    ob = Outbox(tmp_path / "o.sqlite", capacity=5)
    u = ob.add("unsure", px[:3], predicted=["a", 7, "c"], confidences=[0.1, 0.2, 0.3], version=1)
    c = ob.add("correction", px[3:4], labels=[np.int64(5)], predicted=["a"])
    more = ob.add("unsure", px[:3])  # 7 rows > 5: the two oldest *unsure* go
    assert len(set(u + c + more)) == 7
    assert [r["id"] for r in ob.oldest(10)] == [u[2], c[0], *more] and ob.dropped == 2
    ob.add(
        "correction", px[:5], labels=["x"] * 5
    )  # 10 rows: 4 unsure go, then the oldest correction
    rows = ob.oldest(10)
    assert [r["kind"] for r in rows] == ["correction"] * 5 and ob.dropped == 7
    ob.close()

    ob = Outbox(tmp_path / "o.sqlite", capacity=5)  # reopened: everything is still there
    rows = ob.oldest(10)
    assert ob.pending() == 5 and rows[0]["label"] == "x"
    assert np.array_equal(np.frombuffer(rows[4]["pixels"], np.uint8).reshape(28, 28), px[4])
    assert ob.remove([rows[0]["id"], "not-an-id"]) == 1 and ob.pending() == 4
    with pytest.raises(ValueError, match="kind"):
        ob.add("guess", px[:1])
    with pytest.raises(ValueError, match="pixels"):
        ob.add("unsure", px[0])
    first = Outbox(tmp_path / "p.sqlite")
    first.add("correction", px[:1], labels=[np.int64(3)])
    assert first.oldest(1)[0]["label"] == 3 and isinstance(first.oldest(1)[0]["label"], int)


def test_queued_rows_are_committed_in_order_by_the_next_waiting_add_and_by_close(tmp_path):
    import sqlite3

    def on_disk(path):  # what another process would see
        conn = sqlite3.connect(path)
        try:
            return [r[0] for r in conn.execute("SELECT kind FROM examples ORDER BY seq")]
        finally:
            conn.close()

    px = np.zeros((1, 28, 28), np.uint8)
    ob = Outbox(tmp_path / "o.sqlite")
    for _ in range(3):
        ob.add("unsure", px, wait=False)
    ob.add(
        "correction", px, labels=["a"]
    )  # returns once it and the three queued before are committed
    assert on_disk(tmp_path / "o.sqlite") == ["unsure"] * 3 + ["correction"]
    ob.add("unsure", px, wait=False)
    ob.close()
    assert on_disk(tmp_path / "o.sqlite")[-1] == "unsure" and ob.write_errors == 0


def test_reporting_classifier_records_unsure_and_corrections_and_predict_never_fails(
    bundles, tmp_path
):
    ob = Outbox(tmp_path / "o.sqlite")
    clf = ReportingClassifier(bundles["v1"], outbox=ob, threshold=0.0, version=7, delegate="cpu")
    sup, lab = shapes(range(5), 5, seed=1)
    clf.fit(sup, lab)
    qry, _ = shapes(range(5), 4, seed=2)
    base = FewShotClassifier.predict_proba(clf, qry)
    assert np.array_equal(clf.predict_proba(qry), base) and ob.pending() == 0  # nothing below 0
    assert clf.predict(qry) == FewShotClassifier.predict(clf, qry)
    assert clf.predict(qry, transductive=True) == FewShotClassifier.predict(
        clf, qry, transductive=True
    )
    clf.threshold = float(np.median(base.max(axis=1)))
    clf.predict(qry)
    low = np.flatnonzero(base.max(axis=1) < clf.threshold)
    rows = ob.oldest(100)
    assert len(rows) == len(low) > 0 and {r["version"] for r in rows} == {7}
    assert np.allclose([r["confidence"] for r in rows], base.max(axis=1)[low], atol=1e-6)

    before = ob.pending()
    clf.correct(qry[:2], "shape3")
    rows = ob.oldest(100)[before:]
    assert [(r["kind"], r["label"]) for r in rows] == [("correction", "shape3")] * 2
    assert [r["predicted"] for r in rows] == [clf.classes[k] for k in base[:2].argmax(axis=1)]
    assert len(clf.support_images()["shape3"]) == 7  # learned
    clf.correct(qry[2], 42, learn=False)
    assert 42 not in clf.classes and ob.oldest(100)[-1]["label"] == 42

    ob.close()  # e.g. the disk went away: predictions go on, one warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.threshold = 1.01
        assert clf.predict(qry) == FewShotClassifier.predict(clf, qry)
        clf.predict(qry)
    assert (
        clf.outbox_errors == 2 * len(qry)
        and len([w for w in caught if "outbox" in str(w.message)]) == 1
    )


# ----------------------------------------------------------------------------- releases and health
def test_release_signature_and_fields_are_checked(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    files = {
        "manifest.json": {"sha256": "a" * 64, "bytes": 10},
        "backbone.tflite": {"sha256": "b" * 64, "bytes": 5},
    }
    data = make_release(3, "a" * 64, files, "2026-01-01T00:00:00Z", "note")
    sig = key.sign(data).hex()
    assert verify_release(data, sig, pub)["version"] == 3
    cases = [
        ((data.replace(b'"version":3', b'"version":9'), sig, pub), "does not match"),
        ((data, "", pub), "unsigned"),
        ((data, "zz", pub), "not hex"),
        ((data, sig, None), "no server public key"),
    ]
    for bad_files, words in (
        ({**files, "../x": files["manifest.json"]}, "bad file entry"),
        ({"backbone.tflite": files["backbone.tflite"]}, "incomplete"),
    ):
        doc = make_release(3, "a" * 64, bad_files, "t")
        cases.append(((doc, key.sign(doc).hex(), pub), words))
    doc = make_release(4, "c" * 64, files, "t")
    cases.append(((doc, key.sign(doc).hex(), pub), "differs from manifest_sha256"))
    for args, words in cases:
        with pytest.raises(UpdateRefusedError, match=words):
            verify_release(*args)
    assert verify_release(data, None, None, allow_unsigned=True)["version"] == 3
    (tmp_path / "key.txt").write_text(pub.hex() + "\n")
    assert parse_public_key(tmp_path / "key.txt") == pub == parse_public_key(pub.hex().upper())
    with pytest.raises(SyncError, match="64 hex digits"):
        parse_public_key("abc")


def test_health_check_is_leave_one_out_bounded_and_catches_a_useless_head(bundles):
    clf = FewShotClassifier(bundles["v1"], delegate="cpu")
    sup, lab = shapes(range(5), 5, seed=1)
    clf.fit(sup, lab)
    support = clf.support_embeddings()
    acc, method, n = support_accuracy(clf.head_spec, support)
    assert (method, n) == ("leave-one-out", 25) and acc >= 0.8
    assert support_accuracy(clf.head_spec, support, max_queries=7)[2] == 7
    assert support_accuracy(clf.head_spec, {c: v[:1] for c, v in support.items()})[:2] == (
        1.0,
        "resubstitution",
    )
    spec = clf.head_spec
    useless = headlib.HeadSpec(
        [(np.zeros_like(w), np.zeros_like(b)) for w, b in spec.weights],
        spec.activations,
        spec.adaptation,
    )
    assert support_accuracy(useless, support)[0] <= 0.3


# ----------------------------------------------------------------------------- device home
def test_device_home_refuses_a_stale_save_and_a_second_sync(bundles, tmp_path):
    home = installed_home(tmp_path / "home", bundles["v1"])
    clf = home.classifier(delegate="cpu")
    assert clf.version == 1 and clf.head is None and clf.outbox is home.outbox()
    sup, lab = shapes(range(2), 2, seed=1)
    home.save(clf.fit(sup, lab))
    assert home.classifier(delegate="cpu").classes == ["shape0", "shape1"]
    shutil.copytree(bundles["v2"], home.versions / "2")
    (home.root / "current.json").write_text(json.dumps({"version": 2}))  # a sync switched meanwhile
    with pytest.raises(SyncError, match="switched to v2"):
        home.save(clf)
    with home.sync_lock():
        with pytest.raises(SyncError, match="another sync is running"):
            sync(DeviceHome(home.root), "http://127.0.0.1:9", "token")
    (home.root / "current.json").write_text("{")
    with pytest.raises(SyncError, match="current.json: unreadable"):
        _ = home.version  # reading the property is what must raise


def test_runtime_sync_imports_and_works_without_cryptography(bundles, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["cryptography"] = None  # 'import cryptography' now fails, as on a device without it
        import numpy as np
        import metalite.runtime.sync as s
        from metalite.runtime.sync.release import make_release, verify_release
        data = make_release(1, "a" * 64, {{"manifest.json": {{"sha256": "a" * 64, "bytes": 1}}}}, "t")
        assert verify_release(data, None, None, allow_unsigned=True)["version"] == 1
        try:
            verify_release(data, "00" * 64, bytes(32))
        except s.SyncError as e:
            print("ERROR", e)
        clf = s.ReportingClassifier({str(bundles["v1"])!r}, outbox=s.Outbox({str(tmp_path / "o.sqlite")!r}),
                                    threshold=1.01, delegate="cpu")
        clf.fit(np.full((2, 28, 28), 255, np.uint8), ["a", "b"]).predict(np.zeros((3, 28, 28), np.uint8))
        print("PENDING", clf.outbox.pending())
        heavy = ("tensorflow", "fastapi", "uvicorn", "starlette", "cryptography", "metalite.fleet", "metalite.training")
        print("LOADED", sorted(m for m in sys.modules if sys.modules[m] is not None and m.startswith(heavy)))
    """)
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ERROR this command needs cryptography: pip install 'metalite[sync]'" in res.stdout
    assert "PENDING 3" in res.stdout and "LOADED []" in res.stdout, res.stdout
