"""Open-set answers ("none of these"): the calibrated threshold on real Omniglot drawings with the shipped bundle,
its life in the state, through a bundle update and the outbox to a real fleet server on 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fleetkit import Server, shared_bundles, write_pngs
from repo_paths import DATA
from runtime_kit import SHIPPED, shapes

from metalite.runtime import FewShotClassifier, InputError, StateError, openset
from metalite.runtime.openset import UNKNOWN
from metalite.runtime.state import State, load_state, save_state
from metalite.tools.cli import main

FIXTURE = DATA / "omniglot"
SPEC = f"omniglot:{FIXTURE / 'mini1.zip'},{FIXTURE / 'mini2.zip'}"
# docs/open_set.md, "The fixture": one class of 5 drawings, the other 19 Greek characters as unknowns
ONE_CLASS_OTHERS_REFUSED = 0.85  # measured 0.894
ONE_CLASS_KNOWN_REFUSED = 0.03  # measured 0.010


@pytest.fixture(scope="module")
def greek():
    """The fixture's test alphabet: 20 Greek characters, 20 drawings each (``FewShotData``)."""
    from metalite.training.datasets import load_data

    ds = load_data(SPEC, 28, "test")
    assert set(ds.groups) == {"Greek"} and ds.num_classes == 20
    return ds


@pytest.fixture(scope="module")
def clf():
    return FewShotClassifier(SHIPPED, delegate="cpu", unknown="auto")


def _images(ds, c, start=0, stop=None):
    return ds.images[ds.indices_of(c)[start:stop]]


# ----------------------------------------------------------------------------- the rule
def test_one_class_classifier_refuses_other_classes_at_the_documented_rate(greek, clf):
    known, others = [], []
    for c in range(greek.num_classes):
        clf.fit({"this": _images(greek, c, 0, 5)})
        assert clf.unknown["rule"] == "leave-one-out" and clf.unknown["samples"] == 5
        known.append(np.mean([p == UNKNOWN for p in clf.predict(_images(greek, c, 5))]))
        others.append(np.mean(clf.is_unknown(greek.images[greek.labels != c])))
        assert set(clf.predict(_images(greek, c, 5))) <= {"this", UNKNOWN}
    assert np.mean(others) >= ONE_CLASS_OTHERS_REFUSED, np.mean(others)
    assert np.mean(known) <= ONE_CLASS_KNOWN_REFUSED, np.mean(known)
    # off (the default): a one-class classifier answers its class for everything, as before
    plain = FewShotClassifier(SHIPPED, delegate="cpu").fit({"this": _images(greek, 0, 0, 5)})
    assert plain.unknown is None and set(plain.predict(greek.images[:60])) == {"this"}


def test_a_lower_target_rate_refuses_fewer_and_what_one_image_per_class_can_promise(greek, clf):
    support = {f"c{c}": _images(greek, c, 0, 5) for c in range(5)}
    clf.fit(support)
    thresholds = [clf.set_unknown(r).unknown["threshold"] for r in (0.01, 0.02, 0.1)]
    assert thresholds[0] > thresholds[1] > thresholds[2]
    clf.set_unknown("auto")
    assert clf.unknown["rate"] == openset.DEFAULT_RATE
    # one image per class: no distance to hold out, so the nearest-class rule (not calibrated) sets it
    clf.fit({f"c{c}": _images(greek, c, 0, 1) for c in range(5)})
    assert clf.unknown["rule"] == "nearest-class" and clf.unknown["threshold"] > 0
    others = greek.images[np.isin(greek.labels, range(5, 20))]
    assert (
        clf.is_unknown(others).mean() > 0.3
    )  # docs/open_set.md: about 40% of unknowns at 1 shot, 1% target
    # one class, one image: nothing to measure, nothing refused (docs/open_set.md says so)
    clf.fit({"only": _images(greek, 0, 0, 1)})
    assert clf.unknown["rule"] == "none" and clf.unknown["threshold"] is None
    assert not clf.is_unknown(others).any() and set(clf.predict(others[:20])) == {"only"}
    clf.add_class("only", _images(greek, 0, 1, 3))  # a second image calibrates it
    assert clf.unknown["rule"] == "leave-one-out" and clf.is_unknown(others).mean() > 0.5


def test_predict_proba_is_unchanged_and_bad_settings_and_the_reserved_label_are_refused(greek, clf):
    support = {f"c{c}": _images(greek, c, 0, 3) for c in range(4)}
    plain = FewShotClassifier(SHIPPED, delegate="cpu").fit(support)
    clf.fit(support)
    q = greek.images[::7]
    assert np.array_equal(plain.predict_proba(q), clf.predict_proba(q))
    refused = clf.is_unknown(q)
    assert 0 < refused.sum() < len(q)
    assert [UNKNOWN if r else p for p, r in zip(plain.predict(q), refused)] == clf.predict(q)
    for bad in ("yes", 0.0, 0.7, -1, float("nan"), True):
        with pytest.raises(InputError, match="unknown must be"):
            FewShotClassifier(SHIPPED, delegate="cpu", unknown=bad)
    with pytest.raises(InputError, match="cannot be a class label"):
        clf.add_class(UNKNOWN, _images(greek, 9, 0, 2))
    with pytest.raises(InputError, match="cannot be a class label"):
        clf.fit(_images(greek, 9, 0, 2), [UNKNOWN, "x"])


# ----------------------------------------------------------------------------- the state
def test_threshold_survives_save_and_load_and_old_states_still_load(greek, clf, tmp_path):
    clf.fit({f"c{c}": _images(greek, c, 0, 4) for c in range(3)})
    clf.set_unknown(0.05)
    clf.save(tmp_path / "s.npz")
    st = load_state(tmp_path / "s.npz")
    assert st.unknown == clf.unknown and st.unknown["rate"] == 0.05
    back = FewShotClassifier.load(
        SHIPPED, tmp_path / "s.npz", delegate="cpu"
    )  # no unknown given: the state's
    q = greek.images[::5]
    assert (
        back.unknown == clf.unknown
        and back.predict(q) == clf.predict(q)
        and UNKNOWN in back.predict(q)
    )
    off = FewShotClassifier.load(SHIPPED, tmp_path / "s.npz", delegate="cpu", unknown=None)
    assert off.unknown is None and UNKNOWN not in off.predict(q)
    # a state written before open-set answers existed (no meta.unknown) loads with them off; asked for, they are
    # calibrated on its stored support set exactly as a fresh fit would
    save_state(tmp_path / "old.npz", State(**{**st.__dict__, "unknown": None}))
    assert FewShotClassifier.load(SHIPPED, tmp_path / "old.npz", delegate="cpu").unknown is None
    auto = FewShotClassifier.load(SHIPPED, tmp_path / "old.npz", delegate="cpu", unknown=0.05)
    assert auto.unknown == clf.unknown
    # a class named like the open-set answer (possible before it existed) loads, but not with unknown on
    clash = {**st.__dict__, "unknown": None, "classes": [UNKNOWN, *st.classes[1:]]}
    save_state(tmp_path / "clash.npz", State(**clash))
    assert (
        FewShotClassifier.load(SHIPPED, tmp_path / "clash.npz", delegate="cpu").classes[0]
        == UNKNOWN
    )
    with pytest.raises(StateError, match="rename it"):
        FewShotClassifier.load(SHIPPED, tmp_path / "clash.npz", delegate="cpu", unknown="auto")
    # a setting that does not fit is refused in one line
    with pytest.raises(StateError, match="unknown.threshold"):
        save_state(
            tmp_path / "bad.npz",
            State(**{**st.__dict__, "unknown": {**st.unknown, "threshold": -1.0}}),
        )


def test_cli_adapt_and_predict_with_unknown(greek, tmp_path):
    from PIL import Image

    write_pngs(
        tmp_path / "support",
        np.concatenate([_images(greek, c, 0, 5) for c in (0, 1)]),
        ["alpha"] * 5 + ["beta"] * 5,
    )
    queries = [tmp_path / "q_known.png", tmp_path / "q_other.png"]
    Image.fromarray(_images(greek, 0, 10, 11)[0]).save(queries[0])
    Image.fromarray(_images(greek, 15, 0, 1)[0]).save(queries[1])
    cli = CliRunner()
    r = cli.invoke(
        main,
        [
            "adapt",
            str(SHIPPED),
            str(tmp_path / "support"),
            "--out",
            str(tmp_path / "s.npz"),
            "--delegate",
            "cpu",
            "--unknown",
            "auto",
        ],
    )
    assert r.exit_code == 0 and "open set: threshold" in r.stdout, r.output
    r = cli.invoke(
        main,
        [
            "predict",
            str(SHIPPED),
            *map(str, queries),
            "--state",
            str(tmp_path / "s.npz"),
            "--delegate",
            "cpu",
            "--json",
        ],
    )
    rows = json.loads(r.stdout)
    assert r.exit_code == 0 and [x["label"] for x in rows] == ["alpha", UNKNOWN], r.output
    assert rows[1]["nearest"] in ("alpha", "beta") and 0 < rows[1]["confidence"] <= 1
    r = cli.invoke(
        main,
        [
            "predict",
            str(SHIPPED),
            *map(str, queries),
            "--state",
            str(tmp_path / "s.npz"),
            "--delegate",
            "cpu",
            "--unknown",
            "off",
        ],
    )
    assert r.exit_code == 0 and UNKNOWN not in r.stdout, r.output
    r = cli.invoke(
        main,
        [
            "predict",
            str(SHIPPED),
            str(queries[0]),
            "--state",
            str(tmp_path / "s.npz"),
            "--unknown",
            "0.9",
        ],
    )
    assert r.exit_code == 2 and "0.9" in r.output


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_open_set_protocol_on_the_fixture(greek, clf):
    from metalite.training.evaluate import auroc, evaluate_open_set

    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0]), np.array([1.0])) == 0.5
    emb = clf.embed(greek.images)
    res = evaluate_open_set(emb, greek, clf.head_spec, 5, 5, 5, episodes=30, seed=0)
    assert res["unknown_queries"] == 25 and res["rules"] == {"leave-one-out": 30}
    assert res["auroc"]["mean"] > 0.9
    assert res["known_accuracy"]["mean"] <= res["closed_accuracy"]["mean"]
    assert res["false_rejection"]["mean"] < 0.1 and res["unknown_rejected"]["mean"] > 0.7
    one = evaluate_open_set(emb, greek, clf.head_spec, 5, 1, 5, episodes=30, seed=0)
    assert one["rules"] == {"nearest-class": 30} and one["auroc"]["mean"] > 0.8
    r = CliRunner().invoke(
        main,
        [
            "evaluate",
            str(SHIPPED),
            "--data",
            SPEC,
            "--split",
            "test",
            "--open-set",
            "--shots",
            "5",
            "--queries",
            "5",
            "--episodes",
            "20",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout[r.stdout.index("{") :])
    assert (
        got["auroc"]["mean"] > 0.9
        and got["rate"] == openset.DEFAULT_RATE
        and got["split"] == "test"
    )
    r = CliRunner().invoke(
        main, ["evaluate", str(SHIPPED), "--data", SPEC, "--skip-alphabet", "Klingon"]
    )
    assert r.exit_code == 2 and "Klingon" in r.output


# ----------------------------------------------------------------------------- the fleet
def test_a_full_outbox_drops_unknown_and_unsure_rows_before_corrections(tmp_path):
    from metalite.runtime.sync import Outbox

    px = np.full((1, 28, 28), 255, np.uint8)
    with Outbox(tmp_path / "o.sqlite", capacity=3) as ob:
        ob.add("correction", px, ["a"], ["b"], [0.4])
        for kind in ("unknown", "unsure", "unknown", "correction"):
            ob.add(kind, px, predicted=["a"], confidences=[0.5])
        assert [r["kind"] for r in ob.oldest(10)] == ["correction", "unknown", "correction"]
        assert ob.kinds() == {"correction": 2, "unknown": 1} and ob.dropped == 2


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return shared_bundles(tmp_path_factory)


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path / "root", tmp_path / "serve.log").start()
    yield srv
    srv.stop()


def test_unknowns_reach_the_server_as_their_own_kind_and_an_update_recalibrates(
    bundles, server, tmp_path
):
    from metalite.fleet import FleetRoot, enroll, iter_examples, publish
    from metalite.runtime.sync import DeviceHome, parse_public_key, sync

    fl, cli = FleetRoot(server.root), CliRunner()
    token = enroll(fl, "door")
    publish(fl, bundles["v1"])
    home_dir = tmp_path / "door"
    key = parse_public_key(server.public_key())
    assert (
        sync(
            DeviceHome(home_dir), server.url, token, key, delegate="cpu", share_support=False
        ).running
        == 1
    )
    sup, lab = shapes(range(3), 5, seed=1)
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
            "--unknown",
            "auto",
        ],
    )
    assert r.exit_code == 0 and "open set: threshold" in r.stdout, r.output
    r = cli.invoke(main, ["device", "status", "--home", str(home_dir), "--json"])
    v1_setting = json.loads(r.stdout)["unknown"]
    assert v1_setting["rule"] == "leave-one-out" and v1_setting["rate"] == openset.DEFAULT_RATE
    r = cli.invoke(main, ["device", "status", "--home", str(home_dir)])
    assert f"open set: threshold {v1_setting['threshold']:.4g}" in r.stdout, r.output

    # shapes 4 and 7 look like none of the three learned ones (each refused on both test bundles)
    home = DeviceHome(home_dir)
    clf = home.classifier(delegate="cpu")
    known, _ = shapes(range(3), 4, seed=3)
    strangers, _ = shapes([4, 7], 3, seed=3)
    answers = clf.predict(np.concatenate([known, strangers]))
    assert answers[12:] == [UNKNOWN] * 6 and UNKNOWN not in answers[:12], answers
    rows = home.outbox().oldest(100)
    unknown_rows = [x for x in rows if x["kind"] == "unknown"]
    assert len(unknown_rows) == 6 and all(x["predicted"] in lab for x in unknown_rows)
    assert [
        np.frombuffer(x["pixels"], np.uint8).reshape(28, 28).tolist() for x in unknown_rows
    ] == strangers.tolist()
    assert not any(x["kind"] == "unsure" and x["predicted"] == UNKNOWN for x in rows)
    home.close()
    write_pngs(tmp_path / "strangers", strangers[:2], ["s", "s"])
    pngs = sorted(str(p) for p in (tmp_path / "strangers").rglob("*.png"))
    r = cli.invoke(
        main, ["device", "predict", *pngs, "--home", str(home_dir), "--delegate", "cpu", "--json"]
    )
    assert r.exit_code == 0 and [x["label"] for x in json.loads(r.stdout)] == [UNKNOWN] * 2, (
        r.output
    )
    assert "2 unknown" in r.stderr, r.stderr
    r = cli.invoke(
        main,
        [
            "device",
            "predict",
            *pngs,
            "--home",
            str(home_dir),
            "--delegate",
            "cpu",
            "--unknown",
            "off",
        ],
    )
    assert r.exit_code == 0 and UNKNOWN not in r.stdout and "unknown" not in r.stderr, r.output
    rows = DeviceHome(home_dir).outbox().oldest(100)
    assert sum(x["kind"] == "unknown" for x in rows) == 8

    publish(
        fl, bundles["v2"]
    )  # another backbone (24-d): the update re-embeds the support set and recalibrates
    res = sync(DeviceHome(home_dir), server.url, token, key, delegate="cpu", share_support=False)
    assert res.update.status == "switched" and res.uploaded == len(rows), res
    got = list(iter_examples(fl, kinds=["unknown"]))
    assert len(got) == 8 and {e["device"] for e in got} == {"door"}
    assert [e["image"].tolist() for e in got] == strangers.tolist() + strangers[:2].tolist()
    r = cli.invoke(main, ["fleet", "status", "--root", str(server.root)])
    assert r.exit_code == 0 and "8 unknown" in r.stdout, r.output
    assert (
        json.loads(
            cli.invoke(main, ["fleet", "status", "--root", str(server.root), "--json"]).stdout
        )["examples"]["unknown"]
        == 8
    )

    st = load_state(DeviceHome(home_dir).state_path())
    assert st.support.shape[1] == 24 and st.unknown["rate"] == openset.DEFAULT_RATE
    fresh = FewShotClassifier(bundles["v2"], delegate="cpu", unknown="auto").fit(sup, lab)
    assert st.unknown == fresh.unknown and st.unknown["threshold"] != v1_setting["threshold"]
    clf2 = DeviceHome(home_dir).classifier(delegate="cpu")
    assert clf2.version == 2 and clf2.unknown == fresh.unknown
    refused = clf2.is_unknown(strangers)
    assert refused.tolist() == fresh.is_unknown(strangers).tolist() and refused.sum() >= 4, refused
