"""``fleet update`` as a loop that keeps going: examples de-duplicated and held out per class, the candidate
packaged like the release it replaces, a self-contained float model kept with every release it makes (a
second and third update chain), rejected candidates kept and re-gatable, scheduled updates publishing twice.

Real parts throughout: TensorFlow fine-tuning, TF-MOT PQAT, TFLite int8 conversion, the runtime's
interpreter, SQLite, and (for the schedule) a real ``metalite serve`` on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fleetkit import Server, broken_head_bundle
from repo_paths import REPO

from metalite.fleet import FleetRoot, enroll, export_model, latest_offer, list_releases, publish
from metalite.fleet.examples import ingest
from metalite.runtime.bundle import open_bundle
from metalite.tools.cli import main

TINY = {
    "data": "glyphs",
    "backbone": {"kind": "conv4", "filters": 8, "embedding_dim": 16},
    "head": {"hidden": [16], "activation": "linear"},
    "ways": 10,
    "queries": 3,
    "steps": 100,
    "val_every": 100,
    "val_episodes": 20,
    "checkpoint_every": 100,
}
N_CLASSES = 6
QUICK = [
    "--steps",
    "8",
    "--replay",
    "3",
    "--ways",
    "5",
    "--episodes",
    "40",
    "--unseen-classes",
    "30",
    "--max-drop",
    "1",
]


def _send(fleet, device: str, rows: list) -> None:
    """rows: (example id, kind, label, uint8 image) stored as ``device`` sent them."""
    enroll(fleet, device)
    dev = fleet.db().execute("SELECT id FROM devices WHERE name = ?", (device,)).fetchone()["id"]
    batch = [
        {
            "id": f"example-{i}",
            "kind": k,
            "label": lab,
            "height": img.shape[0],
            "width": img.shape[1],
            "pixels": base64.b64encode(np.ascontiguousarray(img).tobytes()).decode(),
        }
        for i, k, lab, img in rows
    ]
    assert ingest(fleet, dev, batch)["stored"] == len(batch)


def test_examples_are_deduplicated_and_held_out_per_class_and_device(tmp_path):
    from metalite.pipelines.fleet_data import write_fleet_data

    fleet = FleetRoot(tmp_path / "root", create=True)
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 256, (8, 8), dtype=np.uint8)  # noqa: E731
    x = [img() for _ in range(5)]
    z = [img() for _ in range(10)]
    y = img()
    # pi-a teaches x0-x2 (support) and corrects x0, x1 (the same drawings again, as `correct` also teaches them)
    _send(
        fleet,
        "pi-a",
        [
            *[(f"a-s{i}", "support", "x", x[i]) for i in range(3)],
            *[(f"a-c{i}", "correction", "x", x[i]) for i in range(2)],
            ("a-y", "support", "y", y),
            *[(f"a-z{i}", "support", "z", z[i]) for i in range(5)],
        ],
    )
    _send(
        fleet,
        "pi-b",
        [
            *[(f"b-x{i}", "support", "x", x[i]) for i in range(2, 5)],  # x2 a third time
            *[(f"b-z{i}", "correction", "z", z[i]) for i in range(5, 10)],
            ("b-w", "support", "x", x[3].copy()),
        ],
    )  # same pixels, same label: one image
    counts = write_fleet_data(fleet, tmp_path / "data", 10**9, 8)
    assert counts["duplicates"] == 4 and counts["train"] + counts["holdout"] == 16, (
        counts
    )  # 5 + 1 + 10 distinct
    labels = json.loads((tmp_path / "data" / "labels.json").read_text())
    by_label = {v: k for k, v in labels.items()}
    held = {
        lab: sorted((tmp_path / "data" / "fleet_holdout" / by_label[lab]).glob("*.png"))
        if (tmp_path / "data" / "fleet_holdout" / by_label[lab]).is_dir()
        else []
        for lab in "xyz"
    }
    train = {
        lab: sorted((tmp_path / "data" / "train" / by_label[lab]).glob("*.png")) for lab in "xyz"
    }
    # every class with >= 2 distinct images has one in five held out, at least one; a single image stays in train
    assert [len(held[c]) for c in "xyz"] == [1, 0, 2] and [len(train[c]) for c in "xyz"] == [
        4,
        1,
        8,
    ], (held, train)
    # z came from two devices (5 each): one held-out image of each (seq <= 10: pi-a's, later: pi-b's)
    seqs = sorted(int(p.stem) for p in held["z"])
    assert seqs[0] <= 11 < seqs[1], seqs
    assert counts["holdout_classes"] == 2 and counts["classes"] == 3
    # the same examples give the same split (not the random ids devices make)
    again = write_fleet_data(fleet, tmp_path / "data2", 10**9, 8)
    assert again == counts
    assert sorted(p.name for p in (tmp_path / "data2" / "fleet_holdout").rglob("*.png")) == sorted(
        p.name for p in (tmp_path / "data" / "fleet_holdout").rglob("*.png")
    )


def test_a_fleet_with_no_labelled_example_is_told_so(tmp_path):
    """Only unsure predictions arrived (no label to train on): one line saying so, not a missing work file."""
    repo = REPO
    fleet = FleetRoot(tmp_path / "root", create=True)
    publish(fleet, repo / "models" / "glyphs", model_dir=repo / "models" / "float" / "glyphs")
    _send(fleet, "pi-a", [("a-u0", "unsure", None, np.full((28, 28), 255, np.uint8))])
    r = CliRunner().invoke(main, ["fleet", "update", "--root", str(fleet.path)])
    assert r.exit_code == 1 and "too few labelled examples from the fleet" in r.output, r.output
    assert "No such file" not in r.output


def test_a_float_model_whose_data_is_elsewhere_is_told_where_to_look(tmp_path, monkeypatch):
    """The shipped float model names its data by the path it was trained with (relative to that checkout): where
    that path is missing the update says so and names ``--data`` (the e2e test on the shipped bundle passes it)."""
    repo = REPO
    monkeypatch.chdir(
        tmp_path
    )  # the relative path in models/float/omniglot's config leads nowhere from here
    fleet = FleetRoot(tmp_path / "root", create=True)
    publish(fleet, repo / "models" / "omniglot", model_dir=repo / "models" / "float" / "omniglot")
    ink = np.full((28, 28), 255, np.uint8)
    ink[10:18, 10:18] = 0
    _send(
        fleet,
        "pi-a",
        [("a-s0", "support", "box", ink), ("a-s1", "support", "box", ink[::-1].copy())],
    )
    r = CliRunner().invoke(main, ["fleet", "update", "--root", str(fleet.path)])
    assert (
        r.exit_code == 1 and "the float model's data: " in r.output and "no such file" in r.output
    ), r.output
    assert "(--data: where this machine has it)" in r.output, r.output
    r = CliRunner().invoke(
        main, ["fleet", "update", "--root", str(fleet.path), "--data", "omniglot:nowhere.zip"]
    )
    assert r.exit_code == 1 and "nowhere.zip: no such file or directory" in r.output, r.output


def test_the_recipe_is_read_from_the_release_and_can_be_overridden():
    from metalite.pipelines.fleet_package import _thinning, release_recipe

    shipped = open_bundle(REPO / "models" / "omniglot").manifest
    r = release_recipe(shipped)
    want = {k: shipped["compression"][k] for k in ("pqat", "sparsity", "distill")}
    assert {k: r[k] for k in want} == want and r["tta"] == shipped["head"]["adaptation"]["tta"]
    assert (r["prune_steps"], r["qat_steps"]) == (
        shipped["compression"]["steps"]["prune"],
        shipped["compression"]["steps"]["qat"],
    )
    r = release_recipe(shipped, {"tta": 0, "sparsity": 0.25, "prune_steps": None})
    assert (
        r["tta"] == 0
        and r["sparsity"] == 0.25
        and r["prune_steps"] == shipped["compression"]["steps"]["prune"]
    )
    plain = release_recipe(
        {"head": {"adaptation": {}}, "compression": {"stage": "float", "pqat": False}}
    )
    assert (
        plain["tta"] == 0 and not plain["pqat"] and plain["sparsity"] == 0
    )  # exported without compression
    conv4 = {"kind": "conv4", "filters": 8, "embedding_dim": 16}
    assert (
        _thinning(conv4, None) is None
        and _thinning({**conv4, "widths": [4, 6, 8, 16]}, [4, 6, 8, 16]) is None
    )
    assert _thinning(conv4, [4, 6, 8, 16]) == [
        0.5,
        0.25,
        0.0,
    ]  # per-layer fractions to the release's widths
    with pytest.raises(ValueError, match="do not fit"):
        _thinning(conv4, [4, 6, 16])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(float model, PQAT bundle with tta 4): a Conv4 with 8 filters, 100 episodes on the glyphs' training
    classes, pruned to 30% with 4 + 3 PQAT steps: a release whose packaging the update must copy."""
    from metalite.export.bundle import write_bundle
    from metalite.training.compress import compress
    from metalite.training.datasets import load_data, representative_inputs
    from metalite.training.modeldir import load_model_dir, meta_from_config
    from metalite.training.trainer import train

    d = tmp_path_factory.mktemp("fleet_chain_base")
    train(d / "model", TINY, log=lambda m: None)
    compress(
        d / "model",
        d / "pqat",
        sparsity=0.3,
        prune_steps=4,
        qat_steps=3,
        episodes=20,
        eval_ways=(5,),
        int8_check=False,
    )
    cfg, backbone, spec = load_model_dir(d / "pqat")
    spec.adaptation["tta"] = 4
    reps = representative_inputs(load_data("glyphs", 28, "train"), 100)
    return d / "model", write_bundle(d / "bundle", backbone, spec, reps, meta_from_config(cfg))


def _new_classes():
    """Images (N_CLASSES, 20, 28, 28) and names of held-out glyph classes (the test split: never trained on)."""
    from metalite.training.datasets import load_data

    test = load_data("glyphs", 28, "test")
    classes = list(range(0, 8 * N_CLASSES, 8))
    return np.stack([test.images[test.indices_of(c)] for c in classes]), [
        test.class_names[c] for c in classes
    ]


def _fleet(base, root: Path):
    model, bundle = base
    fleet = FleetRoot(root, create=True)
    publish(fleet, bundle, model_dir=model)
    imgs, names = _new_classes()
    _send(
        fleet,
        "pi-a",
        [(f"a-{i}-{j}", "support", n, imgs[i, j]) for i, n in enumerate(names) for j in range(6)],
    )
    _send(
        fleet,
        "pi-b",
        [
            (f"b-{i}-{j}", "correction", n, imgs[i, j])
            for i, n in enumerate(names)
            for j in range(4, 10)
        ],
    )  # 4 and 5 again (a correction is also taught as support)
    return fleet, imgs, names


@pytest.mark.slow
def test_three_updates_chain_each_packaged_like_the_release(base, tmp_path):
    fleet, imgs, names = _fleet(base, tmp_path / "root")
    cli = CliRunner()
    for k in range(3):
        if k:  # more corrections arrive between updates
            _send(
                fleet,
                f"pi-c{k}",
                [
                    (f"c{k}-{i}-{j}", "correction", n, imgs[i, 10 + 2 * k + j])
                    for i, n in enumerate(names)
                    for j in range(2)
                ],
            )
        r = cli.invoke(main, ["fleet", "update", "--root", str(fleet.path), *QUICK, "--json"])
        assert r.exit_code == 0, r.output
        m = json.loads(r.stdout)
        assert m["decision"] == "published" and m["version"] == k + 2, m
        man = open_bundle(_bundle_of(fleet, k + 2, tmp_path)).manifest
        assert man["head"]["adaptation"]["tta"] == 4, man["head"]  # the release's shift averaging
        comp = man["compression"]
        assert (
            comp["pqat"]
            and comp["sparsity"] == 0.3
            and comp["steps"]["prune"] == 4
            and comp["steps"]["qat"] == 3
        ), comp
        assert m["recipe"]["tta"] == 4 and m["examples"]["duplicates"] == 2 * N_CLASSES, m
        u = m["unseen"]
        assert (u["ways"], u["episodes"], u["classes"], u["groups_left_out"]) == (
            5,
            40,
            30,
            ["Greek"],
        ), u
        assert "paired" in m["figures"] and "allowed" in m["figures"]
        # the float model kept with the release stands on its own: the original replay data, the release's tta
        model = export_model(fleet, k + 2, tmp_path / f"model-v{k + 2}")
        cfg = json.loads((model / "config.json").read_text())
        assert (
            cfg["data"] == "glyphs"
            and cfg["adaptation"]["tta"] == 4
            and cfg["fleet_update"]["base"] == k + 1
        )
        assert not (
            fleet.path / "updates" / f"v{k + 1}"
        ).exists()  # its work directory is gone, and not needed
    assert [r["version"] for r in list_releases(fleet)] == [1, 2, 3, 4]
    assert all(r["model_files"] >= 3 for r in list_releases(fleet))


def _bundle_of(fleet, version: int, tmp_path: Path) -> Path:
    from metalite.fleet import export_bundle

    return export_bundle(fleet, version, tmp_path / f"bundle-v{version}")


@pytest.mark.slow
def test_rejected_candidates_are_kept_bounded_and_regatable(base, tmp_path):
    fleet, _, _ = _fleet(base, tmp_path / "root")
    bundle = base[1]
    worse = broken_head_bundle(bundle, tmp_path / "worse")
    cli = CliRunner()
    args = [
        "fleet",
        "update",
        "--root",
        str(fleet.path),
        "--ways",
        "5",
        "--episodes",
        "30",
        "--unseen-classes",
        "30",
        "--keep-rejected",
        "2",
    ]
    kept = []
    for _ in range(3):
        r = cli.invoke(main, [*args, "--candidate", str(worse)])
        assert r.exit_code == 0 and r.stdout.startswith(
            "kept v1: candidate is worse on the held-out fleet examples"
        )
        assert "allowed drop 0.00 pt" in r.stdout and "candidate kept as " in r.stdout, r.stdout
        kept.append(Path(r.stdout.strip().split("candidate kept as ")[1]))
        time.sleep(1.1)  # kept directories are named by the second
    rejected = sorted(p.name for p in (fleet.path / "updates" / "rejected").iterdir())
    assert rejected == sorted(p.parent.name for p in kept[1:]), rejected  # the newest two
    m = json.loads((kept[-1].parent / "metrics.json").read_text())
    assert (
        m["decision"] == "kept" and m["fleet_holdout"]["candidate"] < m["fleet_holdout"]["current"]
    )
    assert m["float_model"].startswith("none")
    # re-gated from where it was kept: the same figures (it is the same bundle, the same examples)
    r = cli.invoke(main, [*args, "--candidate", str(kept[-1]), "--json"])
    again = json.loads(r.stdout)
    assert again["decision"] == "kept" and again["fleet_holdout"] == m["fleet_holdout"], again
    assert latest_offer(fleet)["version"] == 1
    # a --candidate published without its float model says so, and the next update says why it cannot start
    r = cli.invoke(main, [*args, "--candidate", str(bundle), "--json"])
    m = json.loads(r.stdout)
    assert m["decision"] == "published" and m["float_model"].startswith("none"), m
    assert list_releases(fleet)[-1]["model_files"] == 0
    r = cli.invoke(main, ["fleet", "update", "--root", str(fleet.path), *QUICK])
    assert r.exit_code == 1 and "release v2 has no model directory" in r.output, r.output
    # with --candidate-model it is kept, and updates continue from it
    r = cli.invoke(
        main, [*args, "--candidate", str(bundle), "--candidate-model", str(base[0]), "--json"]
    )
    assert json.loads(r.stdout)["version"] == 3 and list_releases(fleet)[-1]["model_files"] >= 3


@pytest.mark.slow
def test_serve_update_every_publishes_twice_in_a_row(base, tmp_path):
    """Scheduled updates train, publish, and the next one (after new corrections) starts from the float model
    the first kept: two publishes in a row, not one publish and then ``no such file or directory``."""
    fleet, imgs, names = _fleet(base, tmp_path / "root")
    srv = Server(
        fleet.path,
        tmp_path / "serve.log",
        ["--update-every", str(3 / 3600), "--update-args", " ".join(QUICK)],
    ).start()
    try:
        deadline = (
            time.monotonic() + 1200
        )  # wall: two child updates on 2 cores shared with training runs

        def lines():
            return [
                l for l in srv.log.read_text().splitlines() if l.startswith("scheduled update: ")
            ]

        while not lines() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert lines() and lines()[0].startswith("scheduled update: published v2"), (
            srv.log.read_text()[-3000:]
        )
        _send(
            fleet, "pi-c", [(f"c-{i}", "correction", n, imgs[i, 12]) for i, n in enumerate(names)]
        )
        while (
            not any(l.startswith("scheduled update: published v3") for l in lines())
            and time.monotonic() < deadline
        ):
            assert not any("failed" in l for l in lines()), lines()
            time.sleep(0.5)
        assert any(l.startswith("scheduled update: published v3") for l in lines()), (
            srv.log.read_text()[-3000:]
        )
        assert latest_offer(fleet)["version"] == 3
        assert list_releases(fleet)[-1]["metrics"]["base"] == 2
    finally:
        srv.stop()


def test_update_options_are_checked_when_made_and_are_the_commands_defaults():
    """One options object: a bad value is refused in one line naming it, and `fleet update --help` shows its
    defaults."""
    from metalite.fleet import FleetError
    from metalite.pipelines.fleet_update import UpdateOptions

    for bad, word in [
        ({"steps": 0}, "steps"),
        ({"ways": True}, "ways"),
        ({"lr_scale": 0}, "lr_scale"),
        ({"max_drop": 1.5}, "max_drop"),
        ({"recipe": {"sparsty": 0.5}}, "sparsty"),
    ]:
        with pytest.raises(FleetError, match=word) as e:
            UpdateOptions(**bad)
        assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
    opts = UpdateOptions(candidate="x/bundle", recipe={"tta": 4})
    assert opts.candidate == Path("x/bundle") and opts.recipe == {"tta": 4}
    help_text = CliRunner().invoke(main, ["fleet", "update", "--help"]).output
    d = UpdateOptions()
    for flag, value in [
        ("--steps", d.steps),
        ("--replay", d.replay),
        ("--episodes", d.episodes),
        ("--unseen-classes", d.unseen),
        ("--keep-rejected", d.keep_rejected),
    ]:
        assert re.search(rf"{flag} [A-Z]+.*?\[default: {value}", help_text, re.S), (flag, help_text)
