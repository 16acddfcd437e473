"""``metalite fleet update`` on the shipped, well-trained bundle: ``models/omniglot`` (a Conv4 trained on 18 of
Omniglot's 30 background alphabets) meets three alphabets it never saw on three devices (``fleet_scenario``).

Real parts throughout: ``metalite serve`` on 127.0.0.1, devices syncing through the wire format, TensorFlow
fine-tuning of the shipped float model, TF-MOT QAT, TFLite int8 export, the runtime's interpreter, SQLite.
"""

from __future__ import annotations

import json
import time

import fleet_scenario as fs
import pytest
from click.testing import CliRunner

from fleetkit import Server
from repo_paths import DATA

from metalite.fleet import FleetRoot, export_bundle, export_model, list_releases
from metalite.pipelines.fleet_gate import paired_unseen
from metalite.runtime.sync import parse_public_key
from metalite.tools.cli import main

# The float model's original data as this checkout has it (its config names the training machine's path):
# train Greek and Korean, val Balinese, test Hebrew (tests/data/omniglot_heldout/README.md)
ORIGINAL = f"omniglot:{DATA / 'omniglot' / 'mini1.zip'},{fs.FIXTURE / 'unseen.zip'}"
# the chained second update: its fine-tuning and QAT steps cut to fit the suite's time (see the test)
SECOND = ["--steps", "30", "--qat-steps", "15"]


def test_the_stand_in_data_splits_like_the_original():
    """Replay comes from alphabets models/omniglot trained on; the no-damage check is Hebrew, which it never saw."""
    from metalite.training.datasets import load_data

    groups = {s: sorted(set(load_data(ORIGINAL, 28, s).groups)) for s in ("train", "val", "test")}
    assert groups == {"train": ["Greek", "Korean"], "val": ["Balinese"], "test": ["Hebrew"]}, groups


def _cli(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.stdout


def _pooled(counts) -> float:
    return sum(r for r, _ in counts) / sum(n for _, n in counts)


@pytest.mark.slow
def test_update_with_defaults_helps_the_devices_does_no_damage_and_chains(tmp_path):
    """Three devices, 24 characters each (12 of each of two of Arcadian, Early Aramaic, Sanskrit; every character
    on two devices, 2 drawings taught on each), check 3 more drawings per character and correct what is wrong.
    ``fleet update`` with its defaults, plus ``--data`` (the shipped float model names its data by the path of
    the machine it was trained on), publishes a candidate that gets more of the drawings of 6 people no device
    saw right (no device loses more than 1%), that does not do worse on the fleet's characters in paired
    20-way 1-shot episodes on those drawings, and whose paired 20-way 1-shot accuracy on Hebrew (an alphabet no one sent nor trained on) is not
    below the current one's by more than its CI. The devices check 2 more drawings each and a second update
    chains from the first's float model, without ``--data``; its 300 fine-tuning and 150 QAT steps are cut to
    30 and 15 (``SECOND``): the default run takes 3.1 min on 2 idle cores, two would not fit the suite's
    budget. Measured: the whole test took 198 s wall on 2 shared cores (AMD EPYC, load average 2-3), 143 s of
    it the first update."""
    from metalite.training.datasets import absolute_spec, load_data

    t_start = time.time()
    data = load_data(f"omniglot:{fs.FIXTURE / 'devices.zip'}", 28, "all")
    srv = Server(tmp_path / "root", tmp_path / "serve.log").start()
    try:
        fleet = FleetRoot(srv.root)
        _cli("fleet", "publish", fs.SHIPPED, "--model", fs.SHIPPED_FLOAT, "--root", srv.root)
        key = parse_public_key(srv.public_key())
        devices = fs.start(fleet, srv.url, key, data, fs.assign(data), tmp_path)
        for d in devices:
            fs.check(d, data, 0)
        before = [fs.held_correct(d, data) for d in devices]
        for r in fs.sync_all(devices, srv.url, key):
            assert r.uploaded > 0 and r.pending == 0, r
        sent = fs.uploaded(fleet)
        assert (
            sent["support"] >= 36 * 4 and sent.get("correction", 0) + sent.get("unsure", 0) > 0
        ), sent

        m = json.loads(_cli("fleet", "update", "--root", srv.root, "--data", ORIGINAL, "--json"))
        print(f"\nuploaded {sent}; update 1 ({m['seconds']:.0f} s): {m['figures']}")
        assert m["decision"] == "published" and m["version"] == 2, m
        assert m["recipe"]["tta"] == 8 and m["recipe"]["pqat"], m[
            "recipe"
        ]  # packaged like models/omniglot
        u = m["unseen"]  # the defaults: 600 paired 20-way 1-shot episodes
        assert (u["ways"], u["episodes"], u["classes"], u["groups_left_out"]) == (
            20,
            600,
            20,
            [],
        ), u
        assert u["diff"] >= -u["ci95"], u
        assert m["fleet_holdout"]["candidate"] >= m["fleet_holdout"]["current"], m["fleet_holdout"]

        results = fs.sync_all(devices, srv.url, key)
        assert all(r.update.status == "switched" and r.running == 2 for r in results), [
            r.update for r in results
        ]
        after = [fs.held_correct(d, data) for d in devices]
        print(f"held-out drawings right per device: before {before}, after {after}")
        # a model this well trained gains little on its devices (measured here: 416 -> 417 of 432 held-out
        # drawings; at full scale, scripts/fleet_update_study.py: 603 -> 604 of 648, one device -1, and +0.27 pt
        # paired 20-way 1-shot on the fleet's characters): what must hold is that the devices do not lose
        # (at most 1% of a device's drawings: one drawing, the noise of one fine-tuning run) and that the
        # fleet's characters are not worse in paired episodes on drawings no one uploaded
        assert _pooled(after) >= _pooled(before) - 0.01 and all(
            a[0] >= b[0] - 0.01 * b[1] for a, b in zip(after, before)
        ), (before, after)
        classes = sorted({c for d in devices for c in d.classes})
        old, new = (export_bundle(fleet, v, tmp_path / f"bundle-v{v}") for v in (1, 2))
        f = paired_unseen([old, new], fs.held_data(data, classes), 20, 600, seed=1)
        print(f"fleet characters, held-out drawings, 20-way 1-shot: {f}")
        assert f["classes"] == len(classes) == 36 and f["diff"] >= -f["ci95"], f

        for d in devices:
            fs.check(d, data, 1)
        fs.sync_all(devices, srv.url, key)
        m2 = json.loads(_cli("fleet", "update", "--root", srv.root, *SECOND, "--json"))
        print(f"update 2 ({m2['seconds']:.0f} s): {m2['decision']}: {m2['figures']}")
        assert m2["base"] == 2 and m2["decision"] == "published" and m2["version"] == 3, m2
        assert m2["unseen"]["diff"] >= -m2["unseen"]["ci95"], m2["unseen"]
        cfg = json.loads(
            (export_model(fleet, 3, tmp_path / "model-v3") / "config.json").read_text()
        )
        assert cfg["fleet_update"]["base"] == 2 and cfg["data"] == absolute_spec(ORIGINAL), cfg
        assert [r["version"] for r in list_releases(fleet)] == [1, 2, 3]
        assert all(r.update.status == "switched" for r in fs.sync_all(devices, srv.url, key))
    finally:
        srv.stop()
    print(f"test wall {time.time() - t_start:.0f} s")
