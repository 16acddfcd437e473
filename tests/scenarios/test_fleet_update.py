"""The back end learning from the fleet: ``metalite fleet update`` (fine-tune, PQAT, export, gate, publish).

A tiny real model is meta-trained on the built-in glyphs' training classes; devices then meet glyph
classes of the held-out test split (never trained on), share their support sets and send unsure and
corrected examples to a real ``metalite serve`` on 127.0.0.1. Everything is real: TensorFlow training,
TF-MOT PQAT, TFLite int8 conversion, the runtime's interpreter, SQLite and HTTP.
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from click.testing import CliRunner

from fleetkit import Server, broken_head_bundle
from repo_paths import REPO

from metalite.fleet import FleetRoot, enroll, latest_offer, list_releases, publish
from metalite.runtime import FewShotClassifier
from metalite.runtime.sync import DeviceHome, parse_public_key, sync
from metalite.tools.cli import main

TINY = {
    "data": "glyphs",
    "backbone": {"kind": "conv4", "filters": 8, "embedding_dim": 16},
    "head": {"hidden": [16], "activation": "linear"},
    "ways": 10,
    "queries": 3,
    "steps": 150,
    "val_every": 150,
    "val_episodes": 20,
    "checkpoint_every": 150,
}
N_CLASSES = 8


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(float model dir, its int8 bundle): a Conv4 with 8 filters, 150 episodes on the glyphs' training classes."""
    from metalite.export.bundle import write_bundle
    from metalite.training.datasets import load_data, representative_inputs
    from metalite.training.modeldir import load_model_dir, meta_from_config
    from metalite.training.trainer import train

    d = tmp_path_factory.mktemp("fleet_update_base")
    train(d / "model", TINY, log=lambda m: None)
    cfg, backbone, spec = load_model_dir(d / "model")
    reps = representative_inputs(load_data("glyphs", 28, "train"), 100)
    bundle = write_bundle(d / "bundle", backbone, spec, reps, meta_from_config(cfg))
    return d / "model", bundle


def _new_classes():
    """Images (N_CLASSES, 20, 28, 28) and names of held-out glyph classes (the test split: never trained on)."""
    from metalite.training.datasets import load_data

    test = load_data("glyphs", 28, "test")
    classes = list(range(0, 8 * N_CLASSES, 8))  # spread over the split
    return np.stack([test.images[test.indices_of(c)] for c in classes]), [
        test.class_names[c] for c in classes
    ]


def _accuracy(clf, imgs, names, rows) -> float:
    x = imgs[:, rows].reshape(-1, 28, 28)
    y = [n for n in names for _ in rows]
    return float(np.mean([p == t for p, t in zip(FewShotClassifier.predict(clf, x), y)]))


@pytest.mark.slow
def test_update_fine_tunes_on_what_devices_sent_and_devices_get_better(base, tmp_path):
    model, bundle = base
    srv = Server(tmp_path / "root", tmp_path / "serve.log").start()
    try:
        fleet = FleetRoot(srv.root)
        publish(fleet, bundle, model_dir=model, note="tiny glyphs")
        key = parse_public_key(srv.public_key())
        imgs, names = _new_classes()
        held = list(range(14, 20))  # each device's held-out images of the new classes
        homes = []
        for k, (sup, cor) in enumerate([(range(0, 2), range(2, 7)), (range(7, 9), range(9, 14))]):
            token = enroll(fleet, f"pi-{k}")
            home = DeviceHome(tmp_path / f"pi-{k}")
            assert sync(home, srv.url, token, key, delegate="cpu").update.status == "switched"
            clf = home.classifier(delegate="cpu")
            clf.fit({n: imgs[i, list(sup)] for i, n in enumerate(names)})
            for i, n in enumerate(
                names
            ):  # the user checks some predictions and corrects the wrong ones
                x = imgs[i, list(cor)]
                wrong = [j for j, p in enumerate(clf.predict(x)) if p != n]
                if wrong:
                    clf.correct(x[wrong], n)
            home.save(clf)
            homes.append(
                (home, token, _accuracy(home.classifier(delegate="cpu"), imgs, names, held))
            )
            r = sync(home, srv.url, token, key, delegate="cpu")
            assert r.uploaded > 0 and r.shared >= 2 * N_CLASSES and r.pending == 0
        kinds = fleet.db().execute("SELECT kind, count(*) FROM examples GROUP BY kind").fetchall()
        assert {k for k, _ in kinds} >= {"support", "correction"}, kinds

        t0 = time.time()
        # the tiny model trained 150 episodes: its BatchNorm statistics are worth re-estimating on the fleet's
        # episodes, and its classes have the images for two queries each
        r = CliRunner().invoke(
            main,
            [
                "fleet",
                "update",
                "--root",
                str(srv.root),
                "--steps",
                "200",
                "--replay",
                "5",
                "--lr-scale",
                "1",
                "--batchnorm",
                "adapt",
                "--queries",
                "2",
                "--episodes",
                "200",
                "--max-drop",
                "0.005",
                "--json",
            ],
        )
        wall = time.time() - t0
        assert r.exit_code == 0, r.output
        m = json.loads(r.stdout)
        print(f"\nupdate wall {wall:.1f} s; figures {m['figures']}")
        assert m["decision"] == "published" and m["version"] == 2, m
        u = m[
            "unseen"
        ]  # the gate's figure: 200 paired 20-way 1-shot episodes on test groups no device sent
        assert u["diff"] >= -(0.005 + u["ci95"]) and u["ways"] == 20 and u["episodes"] == 200, u
        # measured apart from the gate too: 300 other episodes of the original held-out (val) classes
        from metalite.fleet import export_bundle
        from metalite.pipelines.fleet_gate import original_val_accuracy

        v2 = export_bundle(fleet, 2, tmp_path / "v2")
        orig = [original_val_accuracy(b, "glyphs", 28, 300, seed=1) for b in (bundle, v2)]
        print(
            f"original val, 300 other 5-way 1-shot episodes: v1 {orig[0]:.4f} -> v2 {orig[1]:.4f}"
        )
        assert orig[1] >= orig[0] - 0.005, orig
        rel = list_releases(fleet)[-1]
        assert rel["metrics"]["fleet_holdout"] == m["fleet_holdout"] and rel["model_files"] >= 3

        before, after = [], []
        for home, token, acc in homes:
            assert sync(home, srv.url, token, key, delegate="cpu").update.status == "switched"
            before.append(acc)
            after.append(_accuracy(home.classifier(delegate="cpu"), imgs, names, held))
        print(f"device accuracy on the new classes: before {before} after {after}")
        assert all(a > b for a, b in zip(after, before)), (
            before,
            after,
        )  # each device, 48 held-out images
        # less dependent on one support set: v1 and v2 adapted on 40 random ones (2-7 of the 14 images per class)
        rng = np.random.default_rng(0)
        draws = [
            [np.sort(rng.choice(14, rng.integers(2, 8), replace=False)) for _ in names]
            for _ in range(40)
        ]
        rand = []
        for b in (bundle, v2):
            clf = FewShotClassifier(b, delegate="cpu")
            rand.append(
                np.mean(
                    [
                        _accuracy(
                            clf.fit({n: imgs[i, d[i]] for i, n in enumerate(names)}),
                            imgs,
                            names,
                            held,
                        )
                        for d in draws
                    ]
                )
            )
        print(f"new classes, 40 random support sets: v1 {rand[0]:.3f} -> v2 {rand[1]:.3f}")
        assert rand[1] > rand[0] + 0.02, rand
        st = CliRunner().invoke(main, ["fleet", "status", "--root", str(srv.root)])
        assert "unseen 20-way 1-shot" in st.stdout and "fleet holdout" in st.stdout, st.stdout
    finally:
        srv.stop()


def _upload(fleet, device: str, imgs, names, kind: str, rows) -> None:
    import base64

    from metalite.fleet.examples import ingest

    token = enroll(fleet, device)
    dev = fleet.db().execute("SELECT id FROM devices WHERE name = ?", (device,)).fetchone()["id"]
    batch = [
        {
            "id": f"{device}-{kind}-{i:02d}-{j:02d}",
            "kind": kind,
            "label": n,
            "height": 28,
            "width": 28,
            "pixels": base64.b64encode(imgs[i, j].tobytes()).decode(),
        }
        for i, n in enumerate(names)
        for j in rows
    ]
    assert ingest(fleet, dev, batch)["stored"] == len(batch)
    return token


def _fleet_with_examples(base, tmp_path):
    """(fleet root with the base published as v1, its bundle): device pi-a shared 10
    support images per new class and pi-b sent 10 corrections per class."""
    model, bundle = base
    fleet = FleetRoot(tmp_path / "root", create=True)
    publish(fleet, bundle, model_dir=model)
    imgs, names = _new_classes()
    _upload(fleet, "pi-a", imgs, names, "support", range(0, 10))
    _upload(fleet, "pi-b", imgs, names, "correction", range(10, 20))
    return fleet, bundle


@pytest.mark.slow
def test_a_candidate_made_worse_is_not_published(base, tmp_path):
    fleet, bundle = _fleet_with_examples(base, tmp_path)
    worse = broken_head_bundle(bundle, tmp_path / "worse")
    cli = CliRunner()
    args = [
        "fleet",
        "update",
        "--root",
        str(fleet.path),
        "--replay",
        "5",
        "--episodes",
        "50",
        "--ways",
        "5",
    ]
    r = cli.invoke(main, [*args, "--candidate", str(worse)])
    assert r.exit_code == 0 and r.stdout.startswith(
        "kept v1: candidate is worse on the held-out fleet examples"
    ), r.output
    assert latest_offer(fleet)["version"] == 1 and len(list_releases(fleet)) == 1
    last = json.loads((fleet.path / "updates" / "last.json").read_text())
    assert (
        last["decision"] == "kept"
        and last["fleet_holdout"]["candidate"] < last["fleet_holdout"]["current"]
    )
    st = cli.invoke(main, ["fleet", "status", "--root", str(fleet.path)])
    assert "last update: kept" in st.stdout, st.stdout
    # the gate passes a candidate that is as good (the same bundle again): it is published with its figures
    r = cli.invoke(main, [*args, "--candidate", str(bundle), "--json"])
    m = json.loads(r.stdout)
    assert m["decision"] == "published" and m["version"] == 2
    assert m["unseen"]["candidate"] == m["unseen"]["current"] and m["unseen"]["diff"] == 0
    r = cli.invoke(main, ["fleet", "update", "--root", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "not a fleet root" in r.output


@pytest.mark.slow
def test_update_killed_mid_fine_tuning_resumes_from_its_checkpoint(base, tmp_path):
    """SIGKILL during fine-tuning (after its first checkpoint), then the same command again: it continues
    the plan (data not re-streamed) from the checkpoint, not from step 0, and reaches a gate decision."""
    import os
    import signal
    import subprocess
    import sys

    fleet, bundle = _fleet_with_examples(base, tmp_path)
    args = [
        "fleet",
        "update",
        "--root",
        str(fleet.path),
        "--steps",
        "1200",
        "--replay",
        "5",
        "--episodes",
        "50",
        "--ways",
        "5",
        "--max-drop",
        "1",
    ]
    ck = fleet.path / "updates" / "v1" / "float" / "checkpoints"
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "metalite.tools.cli", *args],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            deadline = time.monotonic() + 300
            while (
                not (ck / "checkpoint").is_file()
                and proc.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(60)
    plan = json.loads((fleet.path / "updates" / "v1" / "plan.json").read_text())
    assert plan["done"] == ["base", "data"]  # killed inside the fine-tuning
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    m = re.search(r"resumed from step (\d+)", r.output)
    assert m and 0 < int(m.group(1)) < 1200, r.output
    assert (
        "streaming the fleet's labelled examples" not in r.output
    )  # the plan's data step was not redone
    assert re.search(r"^(published v2|kept v1)", r.stdout, re.M), r.stdout
    assert (fleet.path / "updates" / "last.json").is_file()


@pytest.mark.slow
def test_serve_runs_scheduled_updates_in_a_child_and_keeps_serving(base, tmp_path):
    """``serve --update-every``: the update runs on its own (here every 2 s), says its decision in one log
    line, publishes when the gate passes, and the server answers throughout."""
    import urllib.request

    fleet, bundle = _fleet_with_examples(base, tmp_path)
    args = [
        "--update-every",
        str(2 / 3600),
        "--update-args",
        f"--candidate {bundle} --replay 5 --episodes 50 --ways 5",
    ]  # the same bundle again: passes the gate
    srv = Server(fleet.path, tmp_path / "serve.log", args).start()
    try:
        deadline = time.monotonic() + 240
        while "scheduled update: " not in srv.log.read_text() and time.monotonic() < deadline:
            with urllib.request.urlopen(
                srv.url + "/v1/health", timeout=10
            ) as r:  # served while updating
                assert json.loads(r.read())["ok"] is True
            time.sleep(0.5)
        log = srv.log.read_text()
        assert re.search(r"scheduled updates: every [0-9.e-]+ h \(--candidate", log), log
        line = next(l for l in log.splitlines() if l.startswith("scheduled update: "))
        assert line.startswith("scheduled update: published v2"), log
        # the next runs find nothing new: skipped, not the same data trained and published again
        while (
            "scheduled update: skipped" not in srv.log.read_text() and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        lines = [l for l in srv.log.read_text().splitlines() if l.startswith("scheduled update: ")]
        assert lines[1:] and all(
            l.startswith(
                "scheduled update: skipped: no labelled examples arrived since the "
                "last update (up to #160)"
            )
            for l in lines[1:]
        ), lines
        assert latest_offer(fleet)["version"] == 2
    finally:
        srv.stop()
    r = CliRunner().invoke(
        main, ["serve", "--root", str(tmp_path / "r2"), "--update-args", "--steps 3"]
    )
    assert r.exit_code == 2 and "only with --update-every" in r.output, r.output


def test_bad_scheduled_update_options_and_a_second_update_are_refused_at_once(tmp_path):
    import fcntl

    fleet = FleetRoot(tmp_path / "root", create=True)
    r = CliRunner().invoke(
        main,
        [
            "serve",
            "--root",
            str(fleet.path),
            "--port",
            "0",
            "--update-every",
            "24",
            "--update-args",
            "--steps lots",
        ],
    )
    assert (
        r.exit_code == 2
        and "--update-args" in r.output
        and "'lots' is not a valid integer" in r.output
    ), r.output
    publish(fleet, REPO / "models" / "glyphs")
    (fleet.path / "updates").mkdir()
    with open(fleet.path / "updates" / ".lock", "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # as a running update holds it
        r = CliRunner().invoke(main, ["fleet", "update", "--root", str(fleet.path)])
    assert (
        r.exit_code == 1 and "another fleet update of" in r.output and "is running" in r.output
    ), r.output
