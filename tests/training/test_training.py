"""Data, episodes, meta-learners, trainer and the train/evaluate CLI (workstation, TensorFlow)."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from repo_paths import DATA
from training_kit import make_folder

from metalite.training.datasets import DataError, load_data
from metalite.training.episodes import EpisodeSampler

OMNIGLOT = DATA / "omniglot"  # real Omniglot drawings, shipped (README.md there)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("folder"), classes=12, per_class=8)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METALITE_CACHE", str(tmp_path / "cache"))


# ---- data -----------------------------------------------------------------------------------------


def test_omniglot_zip_is_alphabet_aware_and_splits_are_disjoint():
    spec = f"omniglot:{OMNIGLOT / 'mini1.zip'},{OMNIGLOT / 'mini2.zip'}"
    full = load_data(spec, 28, "all")
    assert (
        full.num_classes == 44
        and len(full.images) == 20 * 20 + 24 * 6
        and len(set(full.groups)) == 5
    )
    assert full.images.dtype == np.uint8 and full.images.shape[1:] == (28, 28)
    assert full.images.mean() > 180  # paper stays white, ink dark (Omniglot convention)
    tr, va, te = (
        load_data(spec, 28, "train"),
        load_data(spec, 28, "val"),
        load_data(spec, 28, "test"),
    )
    assert set(tr.groups).isdisjoint(va.groups) and set(tr.groups).isdisjoint(
        te.groups
    )  # whole alphabets held out
    assert tr.num_classes + va.num_classes + te.num_classes == 44
    assert set(te.groups) == {"Greek"}  # the one alphabet with Lake's 20 characters
    rot = load_data(spec, 28, "val", rotations=True)
    assert rot.num_classes == 4 * va.num_classes
    np.testing.assert_array_equal(
        rot.images[rot.labels == va.num_classes][0], np.rot90(va.images[va.labels == 0][0])
    )


def test_two_zips_combine(tmp_path):
    one, two = (
        load_data(f"omniglot:{OMNIGLOT / name}", 28, "all") for name in ("mini1.zip", "mini2.zip")
    )
    both = load_data(f"omniglot:{OMNIGLOT / 'mini1.zip'},{OMNIGLOT / 'mini2.zip'}", 28, "all")
    # mini2 repeats 6 Greek characters of mini1 drawing for drawing (as small2 does small1's Greek): kept once
    assert (one.num_classes, two.num_classes, both.num_classes) == (32, 18, 32 + 18 - 6)
    assert len(both.images) == len(one.images) + len(two.images) - 6 * 6


def test_bad_data_specs_name_the_problem(tmp_path, folder):
    with pytest.raises(DataError, match="no such file"):
        load_data(f"folder:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="unknown data spec"):
        load_data("mnist")
    bad = make_folder(tmp_path / "bad", classes=3, per_class=2)
    (bad / "class00" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="x.png: empty image"):
        load_data(f"folder:{bad}")
    (bad / "class00" / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="x.png: not a readable image"):
        load_data(f"folder:{bad}")
    (bad / "class00" / "x.png").unlink()
    (bad / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no images"):
        load_data(f"folder:{bad}")
    z = tmp_path / "broken.zip"
    z.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not a valid zip"):
        load_data(f"omniglot:{z}")


def test_episode_checks_and_reproducibility(folder):
    data = load_data(f"folder:{folder}", 28, "all")
    with pytest.raises(DataError, match="fewer than --ways 20"):
        EpisodeSampler(data, 20, 1, 1)
    with pytest.raises(DataError, match=r"at least 9 images \(--shots 4 \+ --queries 5\)"):
        EpisodeSampler(data, 5, 4, 5)
    a, b = EpisodeSampler(data, 5, 2, 3, seed=7), EpisodeSampler(data, 5, 2, 3, seed=7)
    for _ in range(3):
        ea, eb = a.sample(), b.sample()
        np.testing.assert_array_equal(ea.support_x, eb.support_x)
        np.testing.assert_array_equal(ea.classes, eb.classes)
    assert ea.support_x.shape == (10, 28, 28, 1) and ea.query_x.shape == (15, 28, 28, 1)
    assert list(ea.support_y) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    # support images really belong to the episode's classes, query disjoint from support
    inputs = data.inputs()
    for k, c in enumerate(ea.classes):
        members = inputs[data.indices_of(c)]
        assert any(np.array_equal(ea.support_x[2 * k], m) for m in members)


def test_within_alphabet_episodes():
    data = load_data(f"omniglot:{OMNIGLOT / 'mini1.zip'}", 28, "all")
    s = EpisodeSampler(data, 5, 1, 1, seed=0, within_group=True)
    for _ in range(5):
        assert len({data.groups[c] for c in s.sample().classes}) == 1


# ---- meta-learners ----------------------------------------------------------------------------------


def _tiny(kind="conv4"):
    from metalite.training.models import build_backbone, build_head

    bb = build_backbone({"kind": kind, "filters": 8, "embedding_dim": 8})
    return bb, build_head({"hidden": [8]}, 8)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["protonet", "anil", "fomaml", "reptile"])
def test_loss_falls_on_a_tiny_problem(folder, algorithm):
    from metalite.export.tfcompat import tf
    from metalite.training.algorithms import make_learner

    tf.keras.utils.set_random_seed(0)
    data = load_data(f"folder:{folder}", 28, "all")
    bb, hd = _tiny()
    hp = {"lr": 3e-3} if algorithm != "reptile" else {"lr": 0.5, "inner_lr": 3e-3}
    learner = make_learner(algorithm, bb, hd, hp)
    fixed = EpisodeSampler(data, 4, 2, 3, seed=1)
    episodes = [fixed.sample() for _ in range(4)]

    def query_loss():  # loss after the device's own adaptation, on fixed episodes
        from metalite.runtime.head import adapt
        from metalite.training.modeldir import head_spec_from_keras

        spec = head_spec_from_keras(hd, "linear", learner.device_adaptation())
        losses = []
        for ep in episodes:
            e_s, e_q = (
                bb(ep.support_x, training=False).numpy(),
                bb(ep.query_x, training=False).numpy(),
            )
            p = adapt(spec, e_s, ep.support_y, ep.ways).predict_proba(e_q)
            losses.append(-np.log(p[np.arange(len(ep.query_y)), ep.query_y] + 1e-9).mean())
        return float(np.mean(losses))

    before = query_loss()
    train = EpisodeSampler(data, 4, 2, 3, seed=2)
    for _ in range(40):
        learner.train_step(train.sample())
    after = query_loss()
    assert after < 0.8 * before, (before, after)


def test_anil_inner_loop_is_the_device_adaptation_and_touches_only_the_head(folder):
    """TF's differentiable inner loop and the numpy device adaptation give the same head."""
    from metalite.export.tfcompat import tf
    from metalite.runtime.head import adapt
    from metalite.training.algorithms import make_learner
    from metalite.training.modeldir import head_spec_from_keras

    bb, hd = _tiny()
    learner = make_learner("anil", bb, hd, {"inner_steps": 3, "inner_lr": 0.2})
    ep = EpisodeSampler(load_data(f"folder:{folder}", 28, "all"), 5, 2, 2, seed=3).sample()
    before = [v.numpy().copy() for v in bb.variables + hd.variables]
    e_s = bb(ep.support_x, training=False)
    fast = learner.adapt_head(
        e_s,
        tf.constant(ep.support_y, tf.int32),
        5,
        [tf.identity(v) for v in hd.trainable_variables],
    )
    after = [v.numpy() for v in bb.variables + hd.variables]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(
            x, y
        )  # inner loop works on copies; nothing in the model moved
    assert not np.allclose(fast[0].numpy(), hd.trainable_variables[0].numpy())  # the head did adapt
    dev = adapt(
        head_spec_from_keras(hd, "linear", learner.device_adaptation()),
        e_s.numpy(),
        ep.support_y,
        5,
    )
    np.testing.assert_allclose(dev.weights[0][0], fast[0].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dev.classifier[0], fast[-2].numpy(), rtol=1e-4, atol=1e-5)
    # and ANIL's outer gradient reaches the backbone (second order through the inner loop)
    with tf.GradientTape() as tape:
        loss, _ = learner.query_loss(
            tf.constant(ep.support_x),
            tf.constant(ep.support_y, tf.int32),
            tf.constant(ep.query_x),
            tf.constant(ep.query_y, tf.int32),
            5,
        )
    grads = tape.gradient(loss, learner.variables)
    assert all(g is not None for g in grads)


def _linear_learner(algorithm, hp):
    from metalite.export.tfcompat import keras
    from metalite.training.algorithms import make_learner

    inp = keras.Input((2, 2, 1))
    bb = keras.Model(inp, keras.layers.Dense(2, use_bias=False)(keras.layers.Flatten()(inp)))
    hd = keras.Sequential([])
    hd.build((None, 2))
    learner = make_learner(algorithm, bb, hd, hp)
    learner.optimizer = keras.optimizers.SGD(1.0)
    return learner, bb


def _np_loss(W, Wc, bc, x, y):
    logits = x.reshape(len(x), -1) @ W @ Wc + bc
    logits = logits - logits.max(1, keepdims=True)
    return float(-(logits[np.arange(len(y)), y] - np.log(np.exp(logits).sum(1))).mean())


def _fd_grad(f, params, i, eps=1e-3):
    g = np.zeros_like(params[i])
    for idx in np.ndindex(g.shape):
        hi = [p.copy() for p in params]
        lo = [p.copy() for p in params]
        hi[i][idx] += eps
        lo[i][idx] -= eps
        g[idx] = (f(*hi) - f(*lo)) / (2 * eps)
    return g


def test_fomaml_outer_gradient_matches_a_hand_computation():
    """Independent numpy computation with finite differences: inner SGD from the prototype
    classifier, then the query gradient at the adapted weights is the outer gradient."""
    from metalite.training.episodes import Episode

    rng = np.random.default_rng(0)
    xs, xq = rng.normal(size=(2, 2, 2, 1)).astype("f4"), rng.normal(size=(4, 2, 2, 1)).astype("f4")
    ys, yq = np.array([0, 1]), np.array([0, 0, 1, 1])
    lr, steps = 0.1, 2
    learner, bb = _linear_learner("fomaml", {"inner_steps": steps, "inner_lr": lr, "scale": 1.0})
    W = bb.trainable_variables[0].numpy().copy()
    e = xs.reshape(2, -1) @ W
    Wc, bc = 2 * e.T, -np.sum(e**2, 1)  # prototypes = the single support embedding per class
    params = [W.copy(), Wc, bc]
    for _ in range(steps):

        def f(a, b, c):
            return _np_loss(a, b, c, xs, ys)

        grads = [_fd_grad(f, params, i) for i in range(3)]
        params = [p - lr * g for p, g in zip(params, grads)]
    g_outer = _fd_grad(lambda a, b, c: _np_loss(a, b, c, xq, yq), params, 0)
    learner.train_step(Episode(xs, ys, xq, yq, 2, np.arange(2)))
    np.testing.assert_allclose(W - bb.trainable_variables[0].numpy(), g_outer, rtol=2e-2, atol=2e-4)


def test_reptile_moves_weights_toward_the_adapted_ones():
    from metalite.training.episodes import Episode

    rng = np.random.default_rng(1)
    xs, xq = rng.normal(size=(2, 2, 2, 1)).astype("f4"), rng.normal(size=(4, 2, 2, 1)).astype("f4")
    ys, yq = np.array([0, 1]), np.array([0, 0, 1, 1])
    learner, bb = _linear_learner("reptile", {"inner_steps": 3, "inner_lr": 0.1})
    learner.optimizer.learning_rate.assign(0.25)
    W = bb.trainable_variables[0].numpy().copy()
    e = xs.reshape(2, -1) @ W
    params = [W.copy(), 2 * e.T, -np.sum(e**2, 1)]
    xa, ya = np.concatenate([xs, xq]), np.concatenate([ys, yq])
    for _ in range(3):
        grads = [_fd_grad(lambda a, b, c: _np_loss(a, b, c, xa, ya), params, i) for i in range(3)]
        params = [p - 0.1 * g for p, g in zip(params, grads)]
    learner.train_step(Episode(xs, ys, xq, yq, 2, np.arange(2)))
    np.testing.assert_allclose(
        bb.trainable_variables[0].numpy(), W + 0.25 * (params[0] - W), rtol=2e-2, atol=2e-4
    )


# ---- trainer and CLI --------------------------------------------------------------------------------


def _settings(folder, **kw):
    s = {
        "data": f"folder:{folder}",
        "algorithm": "protonet",
        "ways": 3,
        "shots": 1,
        "queries": 2,
        "steps": 6,
        "val_every": 3,
        "checkpoint_every": 3,
        "val_episodes": 10,
        "val_ways": 2,
        "backbone": {"kind": "conv4", "filters": 8, "embedding_dim": 8},
        "head": {"hidden": [8], "activation": "linear"},
    }
    s.update(kw)
    return s


@pytest.mark.slow
def test_train_writes_a_model_dir_and_resumes(folder, tmp_path):
    from metalite.training.modeldir import load_model_dir
    from metalite.training.trainer import train

    out = tmp_path / "m"
    cfg = train(out, _settings(folder), progress=False, log=lambda m: None)
    assert (
        cfg["algorithm"] == "protonet"
        and cfg["data"] == f"folder:{folder}"
        and cfg["input"]["shape"] == [28, 28, 1]
    )
    assert cfg["versions"]["tensorflow"] and cfg["seed"] == 0
    _, bb, spec = load_model_dir(out)
    assert bb.output_shape[-1] == 8 and spec.adaptation["steps"] == 0
    train(out, {"steps": 9}, resume=True, progress=False, log=lambda m: None)
    assert json.loads((out / "checkpoints" / "run.json").read_text())["steps"] == 9
    assert (out / "checkpoints" / "ckpt-9.index").exists()


@pytest.mark.slow
def test_fine_tuning_with_freeze_bn_keeps_the_init_models_batchnorm(folder, tmp_path):
    """``init`` + ``freeze_bn``: convolutions learn, every BatchNorm statistic and scale stays the init model's
    (without it the statistics follow the fine-tuning episodes)."""
    from metalite.training.modeldir import load_model_dir
    from metalite.training.trainer import train

    def weights(model_dir):
        _, bb, _ = load_model_dir(model_dir)
        return {w.name: w.numpy() for w in bb.weights}

    train(tmp_path / "base", _settings(folder), progress=False, log=lambda m: None)
    base = weights(tmp_path / "base")
    for freeze in (True, False):
        out = tmp_path / f"tuned-{freeze}"
        train(
            out,
            _settings(folder, init=str(tmp_path / "base"), freeze_bn=freeze, seed=1),
            progress=False,
            log=lambda m: None,
        )
        tuned = weights(out)
        bn = [n for n in base if "_bn/" in n]
        assert len(bn) == 16  # gamma, beta, moving mean and variance of 4 conv blocks
        assert all(np.array_equal(base[n], tuned[n]) for n in bn) == freeze, freeze
        assert not any(np.array_equal(base[n], tuned[n]) for n in base if n.endswith("kernel:0")), (
            freeze
        )


@pytest.mark.slow
def test_ctrl_c_leaves_checkpoint_and_usable_model(folder, tmp_path, monkeypatch):
    from metalite.training import algorithms
    from metalite.training.modeldir import load_model_dir
    from metalite.training.trainer import Interrupted, train

    calls = {"n": 0}
    real = algorithms.ProtoNet.train_step

    def flaky(self, ep):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, ep)

    monkeypatch.setattr(algorithms.ProtoNet, "train_step", flaky)
    out = tmp_path / "m"
    with pytest.raises(Interrupted, match="interrupted at step 4"):
        train(
            out,
            _settings(folder, steps=20, val_every=100, checkpoint_every=100),
            progress=False,
            log=lambda m: None,
        )
    assert (out / "checkpoints" / "ckpt-4.index").exists()
    load_model_dir(out)  # usable although no validation had run yet
    monkeypatch.setattr(algorithms.ProtoNet, "train_step", real)
    train(out, {}, resume=True, progress=False, log=lambda m: None)
    assert (out / "checkpoints" / "ckpt-20.index").exists()


@pytest.mark.slow
def test_cli_train_evaluate_and_errors(folder, tmp_path):
    from metalite.tools.cli import main

    r = CliRunner()
    out = tmp_path / "m"
    res = r.invoke(
        main,
        [
            "train",
            "--data",
            f"folder:{folder}",
            "--steps",
            "4",
            "--ways",
            "3",
            "--queries",
            "2",
            "--filters",
            "8",
            "--embedding-dim",
            "8",
            "--head-hidden",
            "8",
            "--val-every",
            "2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    res = r.invoke(
        main,
        [
            "evaluate",
            str(out),
            "--data",
            f"folder:{folder}",
            "--split",
            "all",
            "--ways",
            "3",
            "--queries",
            "2",
            "--episodes",
            "20",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    acc = json.loads(res.output[res.output.index("{") :])
    assert 0.0 <= acc["mean"] <= 1.0 and acc["episodes"] == 20 and acc["ci95"] >= 0
    for args, msg in [
        (
            ["train", "--data", f"folder:{tmp_path / 'missing'}", "--out", str(tmp_path / "x")],
            "no such file",
        ),
        (
            ["train", "--data", f"folder:{folder}", "--ways", "50", "--out", str(tmp_path / "x")],
            "fewer than --ways 50",
        ),
        (
            ["train", "--algorithm", "maml2", "--out", str(tmp_path / "x")],
            "Invalid value for '--algorithm'",
        ),
        (["evaluate", str(tmp_path / "nomodel")], "no such model directory"),
        (["evaluate", str(folder)], "not a metalite model directory"),
        (
            ["train", "--data", f"folder:{folder}", "--out", str(out)],
            "pass --force to replace it",
        ),  # like export
        (
            ["train", "--data", f"folder:{folder}", "--out", str(folder)],
            "not a metalite model directory",
        ),
    ]:
        res = r.invoke(main, args)
        assert res.exit_code != 0 and msg in res.output, (args, res.output)
        assert "Traceback" not in res.output
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_train_init_starts_from_a_model_and_records_how_much_training_came_before(folder, tmp_path):
    """``--init`` is a warm restart: the run starts from the given float model's weights (not random ones)
    and its config says so, with the episodes behind those weights counted through a chain of restarts."""
    from metalite.tools.cli import main
    from metalite.training.modeldir import load_model_dir

    r = CliRunner()
    small = [
        "--data",
        f"folder:{folder}",
        "--ways",
        "3",
        "--queries",
        "2",
        "--filters",
        "8",
        "--embedding-dim",
        "8",
        "--head-hidden",
        "8",
        "--val-every",
        "2",
    ]
    base, warm, again = tmp_path / "base", tmp_path / "warm", tmp_path / "again"
    assert r.invoke(main, ["train", *small, "--steps", "4", "--out", str(base)]).exit_code == 0
    res = r.invoke(
        main,
        ["train", *small, "--steps", "2", "--lr", "0", "--init", str(base), "--out", str(warm)],
    )
    assert res.exit_code == 0, res.output
    (_, b0, _), (_, b1, _) = load_model_dir(base), load_model_dir(warm)
    # with a learning rate of 0 the warm run keeps the trainable weights it started from (batch-norm
    # statistics still move: they are not learned by the optimizer)
    assert all(
        np.array_equal(x.numpy(), y.numpy())
        for x, y in zip(b0.trainable_weights, b1.trainable_weights)
    )
    assert json.loads((warm / "config.json").read_text())["train"]["warm_start"] == {
        "model": "base",
        "episodes": 4,
    }
    res = r.invoke(
        main, ["train", *small, "--steps", "2", "--init", str(warm), "--out", str(again)]
    )
    assert res.exit_code == 0, res.output
    assert json.loads((again / "config.json").read_text())["train"]["warm_start"] == {
        "model": "warm",
        "episodes": 6,
    }
    res = r.invoke(
        main, ["train", *small, "--init", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]
    )
    assert res.exit_code != 0 and "does not exist" in res.output and "Traceback" not in res.output


def test_every_pipeline_command_is_registered():
    from metalite.tools.cli import main

    assert {
        "train",
        "evaluate",
        "compress",
        "export",
        "inspect",
        "adapt",
        "predict",
        "bench",
    } <= set(main.commands)


def test_folder_training_reads_every_image_file_adapt_accepts(tmp_path):
    """One list of image extensions and one class-folder reader: ``folder:`` training reads the .webp and .tif
    files ``metalite adapt`` takes (it used to skip them), and both skip hidden files and folders."""
    from metalite.runtime.images import IMAGE_EXTENSIONS
    from metalite.tools.cli_runtime import support_folders

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for c, ext in enumerate((".png", ".webp", ".tif", ".jpg")):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(3):
            px = rng.integers(0, 256, (16, 16), dtype=np.uint8)
            Image.fromarray(px).save(
                root / f"class{c}" / f"{i}{ext.upper() if i == 2 else ext}",
                **({"lossless": True} if ext == ".webp" else {}),
            )
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "class0" / ".hidden.png")
    (root / ".thumbnails").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / ".thumbnails" / "t.png")
    assert {".webp", ".tif"} <= set(IMAGE_EXTENSIONS)
    data = load_data(f"folder:{root}", 16, "all")
    assert sorted(data.class_names) == ["class0", "class1", "class2", "class3"]
    assert sorted(data.counts().tolist()) == [3, 3, 3, 3]
    adapt = support_folders(root)
    assert sorted(adapt) == sorted(data.class_names) and all(len(v) == 3 for v in adapt.values())
    webp = data.images[data.labels == data.class_names.index("class1")]
    original = np.asarray(Image.open(root / "class1" / "0.webp").convert("L"))
    assert any(np.array_equal(img, original) for img in webp)  # decoded, not skipped or blank


def test_train_settings_round_trip_through_json_and_refuse_what_cannot_run():
    """TrainSettings -> to_json -> (a JSON text) -> from_json is the same settings, for any valid settings; a
    value that cannot run is refused when made, in one line naming it and what is allowed."""
    from hypothesis import given
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st

    from metalite.training.augment import NONE
    from metalite.training.settings import (
        ALGORITHMS,
        SUPPORTED_ALGORITHMS,
        SettingsError,
        TrainSettings,
    )

    counts = st.integers(1, 10**6)
    valid = st.builds(
        lambda algorithm, distributed, **kw: TrainSettings(
            algorithm=algorithm,
            strategy=distributed if algorithm in SUPPORTED_ALGORITHMS else "default",
            **kw,
        ),
        algorithm=st.sampled_from(ALGORITHMS),
        distributed=st.sampled_from(["default", "mirrored", "multiworker"]),
        data=st.sampled_from(["glyphs", "digits"]),
        backbone=st.fixed_dictionaries(
            {
                "kind": st.sampled_from(["conv4", "dsconv"]),
                "filters": counts,
                "embedding_dim": counts,
            }
        ),
        head=st.fixed_dictionaries(
            {
                "hidden": st.lists(counts, max_size=3),
                "activation": st.sampled_from(["linear", "relu"]),
            }
        ),
        image_size=counts,
        ways=st.none() | st.integers(2, 1000),
        shots=counts,
        queries=counts,
        steps=counts,
        seed=st.integers(-(10**9), 10**9),
        rotations=st.none() | st.booleans(),
        within_alphabet=st.floats(0, 1),
        channels=st.sampled_from([None, 1, 3]),
        augment=st.none()
        | st.dictionaries(st.sampled_from(sorted(NONE)), st.floats(0, 50), max_size=4),
        hparams=st.fixed_dictionaries(
            {}, optional={"lr": st.floats(1e-6, 1.0), "inner_steps": st.integers(0, 9)}
        ),
        val_every=counts,
        val_episodes=counts,
        checkpoint_every=counts,
        split_seed=st.integers(0, 99),
        init=st.none() | st.text(max_size=20),
    )

    @hsettings(max_examples=200, deadline=None)
    @given(valid)
    def round_trip(s):
        again = TrainSettings.from_json(json.loads(json.dumps(s.to_json())))
        assert again == s and again.to_json() == s.to_json()

    round_trip()
    for bad, words in [
        ({"algorithm": "maml2"}, "unknown algorithm 'maml2'; choose one of protonet, anil"),
        ({"steps": 0}, "--steps must be at least 1, got 0"),
        ({"shots": True}, "--shots must be"),
        ({"channels": 2}, "--channels must be 1 (gray) or 3 (RGB), got 2"),
        ({"backbone": {"kind": "resnet"}}, "kind must be one of conv4, dsconv"),
        ({"head": {"hidden": [64], "activation": "tanh"}}, "choose one of linear, relu"),
        ({"algorithm": "reptile", "strategy": "mirrored"}, "supports protonet and anil only"),
        ({"within_alphabet": 2}, "in [0, 1], got 2"),
        ({"data": "mnist"}, "unknown data spec"),
    ]:
        with pytest.raises(ValueError, match=re.escape(words)) as e:
            TrainSettings(**bad)
        assert "\n" not in str(e.value), bad
    with pytest.raises(SettingsError, match="unknown run settings colour"):
        TrainSettings.from_json({"colour": True})
    old = {
        k: v
        for k, v in TrainSettings().to_json().items()
        if k not in ("split_seed", "channels", "init")
    }
    assert (
        TrainSettings.from_json({**old, "within_alphabet": True}).within_alphabet == 1.0
    )  # an older run file


def test_the_train_command_takes_its_choices_and_defaults_from_the_settings():
    from metalite.tools.cli import main
    from metalite.training.settings import ALGORITHMS, STRATEGIES, TrainSettings

    d, params = TrainSettings(), {p.name: p for p in main.commands["train"].params}
    assert (
        tuple(params["algorithm"].type.choices) == ALGORITHMS
        and params["algorithm"].default == d.algorithm
    )
    assert tuple(params["strategy"].type.choices) == STRATEGIES
    assert (params["filters"].default, params["embedding_dim"].default) == (
        d.backbone["filters"],
        d.backbone["embedding_dim"],
    )
    assert params["image_size"].default == d.image_size and params["data"].default == d.data
    assert (
        f"[default: {d.steps}," in params["steps"].help
        and f"[default: {d.queries}]" in params["queries"].help
    )
