"""Omniglot drawers and splits, augmentation in the sampler, and Lake et al.'s one-shot runs."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from metalite.training.augment import Augment, stroke_width, warp_affine
from metalite.training.datasets import DataError, FewShotData, load_data
from metalite.training.episodes import EpisodeSampler
from metalite.training.lake import lake_alphabets, lake_error, lake_runs

# alphabet -> characters; two of them can host Lake's 20-way runs
ALPHABETS = {"Aleph": 22, "Beta": 20, "Gimel": 6, "Dalet": 5, "Heh": 7}


def _drawing(char: int, drawer: int, size: int = 32) -> np.ndarray:
    """A character-specific stroke pattern, shifted a little per drawer (paper 255, ink 0)."""
    crng, drng = np.random.default_rng(char), np.random.default_rng(10_000 * char + drawer)
    img = np.full((size, size), 255, np.uint8)
    for _ in range(3):
        y, x = crng.integers(4, size - 10, 2) + drng.integers(-1, 2, 2)
        h, w = crng.integers(2, 8, 2)
        img[y : y + h, x : x + w] = 0
    return img


def omniglot_zip(path, alphabets=ALPHABETS, drawers=4, root="images_background"):
    """An Omniglot-layout zip: root/alphabet/characterNN/CCCC_DD.png."""
    char = 0
    with zipfile.ZipFile(path, "w") as zf:
        for alphabet, n in alphabets.items():
            for k in range(1, n + 1):
                char += 1
                for d in range(1, drawers + 1):
                    buf = io.BytesIO()
                    Image.fromarray(_drawing(char, d)).save(buf, "PNG")
                    zf.writestr(
                        f"{root}/{alphabet}/character{k:02d}/{char:04d}_{d:02d}.png", buf.getvalue()
                    )
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METALITE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def two_zips(tmp_path):
    """Two zips sharing one alphabet file for file (as Omniglot's small1/small2 share Greek and Latin)."""
    a = omniglot_zip(
        tmp_path / "a.zip", {k: ALPHABETS[k] for k in ("Aleph", "Gimel", "Dalet")}, root="small1"
    )
    b = omniglot_zip(
        tmp_path / "b.zip", {k: ALPHABETS[k] for k in ("Aleph", "Beta", "Heh")}, root="small2"
    )
    return f"omniglot:{a},{b}"


def test_drawers_parsed_and_shared_alphabets_deduplicated(two_zips):
    data = load_data(two_zips, 28, "all")
    assert data.num_classes == sum(ALPHABETS.values())
    assert set(data.counts()) == {4}  # Aleph's drawings are in both zips, each kept once
    assert sorted(set(data.drawers.tolist())) == [1, 2, 3, 4]
    for c in range(data.num_classes):
        assert sorted(data.drawers[data.indices_of(c)].tolist()) == [1, 2, 3, 4]


def test_omniglot_split_is_three_way_and_tests_on_lake_sized_alphabets(two_zips):
    parts = {s: load_data(two_zips, 28, s) for s in ("train", "val", "test")}
    groups = {s: set(d.groups) for s, d in parts.items()}
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])
    assert sum(d.num_classes for d in parts.values()) == sum(ALPHABETS.values())
    assert groups["test"] <= {"Aleph", "Beta"}  # only alphabets with >= 20 characters
    assert groups["val"] == {"Dalet"}  # the smallest alphabet validates
    rot = load_data(two_zips, 28, "train", rotations=True)
    np.testing.assert_array_equal(rot.drawers, np.tile(parts["train"].drawers, 4))


def _data(alphabets, drawers=3):
    labels, groups, names, draw = [], [], [], []
    for g, n in alphabets.items():
        for _ in range(n):
            c = len(names)
            names.append(f"{g}/c{c}")
            groups.append(g)
            labels += [c] * drawers
            draw += list(range(1, drawers + 1))
    images = np.zeros((len(labels), 4, 4), np.uint8)
    return FewShotData(images, np.array(labels), names, groups, drawers=np.array(draw))


def test_split_seed_holds_out_other_alphabets_and_never_mixes_splits(tmp_path):
    z = omniglot_zip(tmp_path / "o.zip", {**ALPHABETS, "Vav": 21, "Zayin": 20, "Het": 8})
    tests = []
    for seed in range(4):
        parts = {
            s: set(load_data(f"omniglot:{z}", 28, s, seed=seed).groups)
            for s in ("train", "val", "test")
        }
        assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"])
        assert not (parts["val"] & parts["test"])
        tests.append(frozenset(parts["test"]))
    assert len(set(tests)) > 1  # another seed is another fold


def test_lake_runs_are_within_alphabet_with_different_drawers():
    data = _data({"A": 25, "B": 20, "C": 19})
    assert lake_alphabets(data) == ["A", "B"]
    runs = lake_runs(data, runs=30, seed=3)
    assert [g for g, _, _ in runs[:4]] == ["A", "B", "A", "B"]
    for g, s, q in runs:
        assert len(s) == len(q) == 20
        assert {data.groups[c] for c in data.labels[s]} == {g}
        np.testing.assert_array_equal(
            data.labels[s], data.labels[q]
        )  # query k is support k's character
        assert len(set(data.labels[s])) == 20
        assert np.all(data.drawers[s] != data.drawers[q])
    again = lake_runs(data, runs=30, seed=3)
    assert all(
        np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) for a, b in zip(runs, again)
    )


def test_lake_error_scores_the_classifier():
    data = _data({"A": 20})
    runs = lake_runs(data, runs=10)
    perfect = lake_error(lambda s, y, q: y, runs)
    assert perfect["error"] == 0.0 and perfect["ci95"] == 0.0 and perfect["runs"] == 10
    first_two = lake_error(lambda s, y, q: np.where(y < 2, y, 0), runs)
    assert first_two["error"] == pytest.approx(18 / 20) and first_two["alphabets"] == {"A": 0.9}


def test_lake_needs_drawers_and_big_alphabets():
    no_drawers = FewShotData(
        np.zeros((40, 4, 4), np.uint8),
        np.repeat(np.arange(20), 2),
        [str(i) for i in range(20)],
        ["A"] * 20,
    )
    with pytest.raises(
        DataError, match="no alphabet has 20 characters drawn by at least two people"
    ):
        lake_runs(no_drawers)
    with pytest.raises(DataError, match="no alphabet has 20"):
        lake_runs(_data({"A": 19, "B": 19}))


def test_lake_runs_paired_per_run_use_one_drawer_for_support_and_another_for_queries():
    data = _data({"A": 25, "B": 20})
    for _, s, q in lake_runs(data, runs=12, seed=1, pairing="run"):
        assert len(set(data.drawers[s])) == 1 and len(set(data.drawers[q])) == 1  # one person each
        assert data.drawers[s][0] != data.drawers[q][0]
        np.testing.assert_array_equal(data.labels[s], data.labels[q])
    # the default pairing keeps drawing the pair per character: the same runs as before the option existed
    per_char = lake_runs(data, runs=12, seed=1)
    assert any(len(set(data.drawers[s])) > 1 for _, s, _ in per_char)
    with pytest.raises(DataError, match="unknown drawer pairing 'person'"):
        lake_runs(data, pairing="person")


def test_lake_error_reports_the_spread_over_alphabets_and_the_worst():
    data = _data({"A": 20, "B": 20})
    runs = lake_runs(data, runs=10)
    res = lake_error(
        lambda s, y, q: np.where(y < 10, y, 0) if data.groups[data.labels[s[0]]] == "B" else y, runs
    )
    assert res["alphabets"] == {"A": 0.0, "B": pytest.approx(0.5)}
    assert res["worst_alphabet"] == "B" and res["worst_error"] == pytest.approx(0.5)
    assert res["alphabet_mean"] == pytest.approx(0.25) and res["alphabet_sd"] == pytest.approx(
        np.std([0, 0.5], ddof=1)
    )
    assert res["alphabets_ci95"]["A"] == 0.0


def test_nearest_neighbour_baseline_on_the_same_episodes():
    from metalite.training.evaluate import evaluate_embeddings, nearest_neighbour, pixel_features

    data = _data({"A": 6})
    data.images[:] = (data.labels[:, None, None] * 40).astype(
        np.uint8
    )  # each class one flat gray level
    feats = pixel_features(data)
    assert feats.shape == (len(data.images), 16)
    res = evaluate_embeddings(feats, data, None, 5, 1, 1, episodes=20, classify=nearest_neighbour)
    assert res["mean"] == 1.0
    np.testing.assert_array_equal(
        nearest_neighbour(np.eye(2), np.array([7, 9]), np.array([[0.1, 0.9]])), [9]
    )


def test_digits_spec_gives_framed_ink_on_paper_digits():
    data = load_data("digits", 28, "all")
    assert (
        data.num_classes == 10
        and data.images.shape == (1797, 28, 28)
        and data.images.dtype == np.uint8
    )
    mean = data.images.astype(float).mean(0)
    assert mean[:4].min() == 255 and mean[-4:].min() == 255  # a paper frame around every digit
    assert mean[10:18, 10:18].mean() < 200  # ink in the middle
    with pytest.raises(DataError, match="unknown data spec 'digit'"):
        load_data("digit", 28)


# ---- augmentation ------------------------------------------------------------------------------------


def test_warp_shifts_and_fills_with_paper():
    x = np.zeros((1, 7, 7, 1), np.float32)
    x[0, 3, 3] = 1
    down_right = np.array([[[1, 0, -1], [0, 1, -2]]], float)  # output (r, c) reads input (r-1, c-2)
    y = warp_affine(x, down_right)
    assert np.argwhere(y[0, ..., 0] > 0.5).tolist() == [[4, 5]]
    edge = np.ones((1, 5, 5, 1), np.float32)
    assert warp_affine(edge, np.array([[[1, 0, 3], [0, 1, 0]]], float))[0, 2:, :, 0].max() == 0.0


def test_stroke_width_thickens_and_thins():
    x = np.zeros((2, 9, 9, 1), np.float32)
    x[:, 3:6, 3:6] = 1
    out = stroke_width(x, np.array([1.0, -1.0]))
    assert out[0].sum() == 25 and out[1].sum() == 1


def test_augment_is_bounded_reproducible_and_off_by_default():
    rng = np.random.default_rng(0)
    x = (rng.random((16, 28, 28, 1)) > 0.8).astype(np.float32)
    assert Augment()(np.random.default_rng(1), x) is x
    aug = Augment(shift=2, rotate=10, scale=0.1, shear=0.2, stroke=0.5)
    a, b = aug(np.random.default_rng(5), x), aug(np.random.default_rng(5), x)
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1 + 1e-6
    assert not np.allclose(a, x)
    with pytest.raises(ValueError, match="rotate must be a finite number >= 0"):
        Augment(rotate=-1)


def test_sampler_mixes_hard_episodes_and_augments():
    data = _data({"A": 8, "B": 8, "C": 8}, drawers=3)
    data.images[:] = np.random.default_rng(0).integers(0, 256, data.images.shape, dtype=np.uint8)
    hard = EpisodeSampler(data, 5, 1, 1, seed=0, within_group=1.0)
    assert all(len({data.groups[c] for c in hard.sample().classes}) == 1 for _ in range(10))
    mixed = EpisodeSampler(data, 5, 1, 1, seed=0, within_group=0.5)
    one_group = [len({data.groups[c] for c in mixed.sample().classes}) == 1 for _ in range(200)]
    assert (
        0.4 < np.mean(one_group) < 0.75
    )  # half hard, plus random episodes that happen to be one alphabet
    wide = EpisodeSampler(
        data, 12, 1, 1, seed=0, within_group=0.5
    )  # no alphabet has 12: fill from few
    assert len({data.groups[c] for c in wide.sample().classes}) <= 3
    with pytest.raises(DataError, match="between 0 and 1"):
        EpisodeSampler(data, 5, 1, 1, within_group=2)
    plain = EpisodeSampler(data, 5, 1, 1, seed=4).sample()
    aug = EpisodeSampler(data, 5, 1, 1, seed=4, augment=Augment(shift=2)).sample()
    np.testing.assert_array_equal(plain.classes, aug.classes)
    assert not np.allclose(plain.support_x, aug.support_x)


# ---- the CLI on a model directory and on a bundle ------------------------------------------------------


def test_evaluate_lake_on_model_dir_and_bundle(tmp_path):
    from click.testing import CliRunner

    from metalite.tools.cli import main

    z = omniglot_zip(tmp_path / "o.zip")
    spec = f"omniglot:{z}"
    run = CliRunner().invoke
    r = run(
        main,
        [
            "train",
            "--data",
            spec,
            "--ways",
            "5",
            "--queries",
            "1",
            "--steps",
            "6",
            "--val-every",
            "6",
            "--filters",
            "8",
            "--embedding-dim",
            "8",
            "--head-hidden",
            "",
            "--augment",
            "shift=1,stroke=0.3",
            "--within-alphabet",
            "0.5",
            "--out",
            str(tmp_path / "m"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "m" / "config.json").read_text())["train"]["augment"] == {
        "shift": 1.0,
        "stroke": 0.3,
    }
    r = run(
        main,
        [
            "evaluate",
            str(tmp_path / "m"),
            "--protocol",
            "lake",
            "--runs",
            "20",
            "--json",
            "--pixel-baseline",
        ],
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output[r.output.index("{") :])
    assert res["protocol"] == "lake" and res["runs"] == 20 and 0 <= res["error"] <= 1
    assert res["pairing"] == "character" and res["worst_alphabet"] in res["alphabets"]
    assert res["pixel_baseline"]["runs"] == 20 and 0 <= res["pixel_baseline"]["error"] <= 1
    r = run(
        main,
        ["evaluate", str(tmp_path / "m"), "--protocol", "lake", "--runs", "4", "--pairing", "run"],
    )
    assert r.exit_code == 0 and "drawers paired per run" in r.output and "worst" in r.output, (
        r.output
    )
    assert set(res["alphabets"]) <= {"Aleph", "Beta"} and "Keras" in res["measured"]
    r = run(
        main,
        [
            "export",
            str(tmp_path / "m"),
            "--out",
            str(tmp_path / "b"),
            "--eval-episodes",
            "0",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    r = run(main, ["evaluate", str(tmp_path / "b"), "--protocol", "lake", "--runs", "20", "--json"])
    assert (
        r.exit_code != 0 and "trained on omniglot:o.zip; pass --data" in r.output
    )  # manifests hold no paths
    r = run(
        main,
        [
            "evaluate",
            str(tmp_path / "b"),
            "--protocol",
            "lake",
            "--runs",
            "20",
            "--json",
            "--data",
            spec,
        ],
    )
    assert r.exit_code == 0, r.output
    int8 = json.loads(r.output[r.output.index("{") :])
    assert "bundle through the runtime" in int8["measured"] and 0 <= int8["error"] <= 1
    assert int8["split"] == "test" and set(int8["alphabets"]) == set(res["alphabets"])
    r = run(main, ["train", "--data", spec, "--augment", "spin=3", "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "spin=3" in r.output and not (tmp_path / "x").exists()
