"""Colour end to end: RGB data, a tiny RGB model trained and exported to int8, the runtime, state
files, the fleet's wire formats on a real server, and the emoji fixture.

The central check: two classes that differ only in colour (same shape, same luma) are told apart by an RGB
bundle through ``FewShotClassifier``, and not by a gray one, which sees identical input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from repo_paths import REPO
from runtime_kit import SHIPPED, assert_one_line

from metalite.runtime import FewShotClassifier
from metalite.runtime.errors import BundleError, InputError
from metalite.runtime.images import as_model_input, read_image
from metalite.runtime.state import load_state

EMOJI = REPO / "tests" / "data" / "emoji"
SIZE = 20
# Two colours of exactly the same luma (0.299 R + 0.587 G + 0.114 B = 110.29): magenta and green.
MAGENTA, GREEN = (240, 20, 235), (3, 185, 7)
HUES = [
    (220, 30, 30),
    (30, 160, 40),
    (40, 60, 220),
    (230, 200, 20),
    (150, 40, 190),
    (20, 190, 200),
    MAGENTA,
    GREEN,
]
SHAPES = ("square", "disc", "hbar", "vbar", "cross")


def luma(rgb) -> float:
    return float(np.float32(rgb) @ np.array([0.299, 0.587, 0.114], np.float32))


def draw(shape: str, colour, rng, size: int = SIZE) -> np.ndarray:
    """uint8 (size, size, 3): one filled shape in ``colour`` on white, its place and size jittered by ``rng``."""
    img = np.full((size, size, 3), 255, np.uint8)
    c = size / 2 + rng.integers(-2, 3, 2)
    r = size * 0.28 + rng.integers(-1, 2)
    yy, xx = np.mgrid[:size, :size]
    dy, dx = np.abs(yy - c[0]), np.abs(xx - c[1])
    mask = {
        "square": (dy <= r) & (dx <= r),
        "disc": dy**2 + dx**2 <= r**2,
        "hbar": (dy <= r / 3) & (dx <= r),
        "vbar": (dx <= r / 3) & (dy <= r),
        "cross": ((dy <= r / 3) & (dx <= r)) | ((dx <= r / 3) & (dy <= r)),
        "ring": (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (r / 2) ** 2),
    }[shape]
    img[mask] = colour
    return img


@pytest.fixture(scope="module")
def rgb_bundle(tmp_path_factory):
    """A tiny conv4 meta-trained for a few seconds on shape x colour classes, exported by ``metalite export``."""
    from metalite.tools.cli import main
    from metalite.training.trainer import train

    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("colour")
    mp.setenv("METALITE_CACHE", str(root / "cache"))
    rng = np.random.default_rng(0)
    for s in SHAPES:
        for h, colour in enumerate(HUES):
            d = root / "data" / f"{s}-{h}"
            d.mkdir(parents=True)
            for i in range(6):
                Image.fromarray(draw(s, colour, rng)).save(d / f"{i}.png")
    settings = {
        "data": f"folder:{root / 'data'}",
        "image_size": SIZE,
        "steps": 40,
        "ways": 5,
        "shots": 1,
        "queries": 3,
        "val_every": 1000,
        "val_episodes": 5,
        "checkpoint_every": 1000,
        "augment": {"shift": 1.0, "hue": 0.0},
        "backbone": {"kind": "conv4", "filters": 16, "embedding_dim": 16},
        "head": {"hidden": [], "activation": "linear"},
    }
    cfg = train(root / "float", settings, progress=False, log=lambda m: None)
    res = CliRunner().invoke(
        main,
        [
            "export",
            str(root / "float"),
            "--out",
            str(root / "bundle"),
            "--eval-episodes",
            "0",
            "--representative",
            "60",
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    yield {"root": root, "bundle": root / "bundle", "cfg": cfg}
    mp.undo()


def _paired_queries(n: int = 12, seed: int = 5):
    """The same ``n`` jittered rings drawn in magenta and in green: pairs that differ in colour only."""
    rng = np.random.default_rng(seed)
    states = [np.random.default_rng(int(s)) for s in rng.integers(0, 1 << 30, n)]
    geo = [s.bit_generator.state for s in states]
    out = {}
    for name, colour in (("magenta", MAGENTA), ("green", GREEN)):
        imgs = []
        for g in geo:
            r = np.random.default_rng()
            r.bit_generator.state = g
            imgs.append(draw("ring", colour, r))
        out[name] = np.stack(imgs)
    return out


@pytest.mark.slow
def test_training_on_colour_data_records_rgb_in_config_and_manifest(rgb_bundle):
    assert rgb_bundle["cfg"]["input"]["shape"] == [SIZE, SIZE, 3]
    m = json.loads((rgb_bundle["bundle"] / "manifest.json").read_text())
    assert m["input"]["shape"] == [SIZE, SIZE, 3]
    assert m["input"]["preprocess"]["color"] == "RGB" and m["input"]["preprocess"][
        "background"
    ] == [255, 255, 255]
    assert m["quantization_check"]["cosine_min"] > 0.9  # int8 calibration on RGB input worked


@pytest.mark.slow
def test_rgb_bundle_tells_apart_classes_differing_only_in_colour_and_a_gray_bundle_cannot(
    rgb_bundle,
):
    assert abs(luma(MAGENTA) - luma(GREEN)) < 0.01
    q = _paired_queries()
    support = {
        "magenta": draw("ring", MAGENTA, np.random.default_rng(99))[None],
        "green": draw("ring", GREEN, np.random.default_rng(99))[None],
    }
    truth = ["magenta"] * len(q["magenta"]) + ["green"] * len(q["green"])
    queries = np.concatenate([q["magenta"], q["green"]])

    rgb = FewShotClassifier(rgb_bundle["bundle"], delegate="cpu").fit(support)
    acc = np.mean(np.array(rgb.predict(queries)) == np.array(truth))
    assert acc >= 0.9, acc

    gray = FewShotClassifier(SHIPPED, delegate="cpu").fit(support)
    x = as_model_input(queries, gray.bundle.input_shape, gray.bundle.preprocess)
    n = len(q["magenta"])
    assert np.abs(x[:n] - x[n:]).max() < 1e-4  # the gray model's input is the same for both colours
    got = gray.predict(queries)
    assert (
        got[:n] == got[n:]
    )  # so each pair gets one answer: right for one colour, wrong for the other
    assert np.mean(np.array(got) == np.array(truth)) == 0.5


@pytest.mark.slow
def test_rgb_support_images_survive_save_and_load(rgb_bundle, tmp_path):
    rng = np.random.default_rng(3)
    clf = FewShotClassifier(rgb_bundle["bundle"], delegate="cpu")
    clf.fit(
        {
            "red": np.stack([draw("disc", HUES[0], rng) for _ in range(2)]),
            "blue": draw("disc", HUES[2], rng),
        }
    )
    clf.save(tmp_path / "s.npz")
    st = load_state(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as z:
        meta = json.loads(str(z["meta"]))
    assert (
        meta["format_version"] == 3
        and st.images.shape == (3, SIZE, SIZE, 3)
        and st.images.dtype == np.uint8
    )
    kept = clf.support_images()
    back = FewShotClassifier.load(rgb_bundle["bundle"], tmp_path / "s.npz", delegate="cpu")
    assert all(np.array_equal(kept[c], back.support_images()[c]) for c in ("red", "blue"))
    # kept pixels re-embed to the stored embeddings: another backbone could rebuild the classes from them
    again = FewShotClassifier(rgb_bundle["bundle"], delegate="cpu", cache_size=0)
    assert np.allclose(again.embed(kept["red"]), clf.support_embeddings()["red"], atol=1e-5)
    probe = draw("disc", HUES[0], rng)
    assert back.predict(probe[None]) == clf.predict(probe[None]) == ["red"]


def test_gray_states_stay_version_2_and_old_versions_load(tmp_path):
    from runtime_kit import write_v1_state

    img = np.full((28, 28), 255, np.uint8)
    img[8:20, 8:20] = 0
    clf = FewShotClassifier(SHIPPED, delegate="cpu").fit([img, 255 - img], ["a", "b"])
    clf.save(tmp_path / "v2.npz")
    with np.load(tmp_path / "v2.npz") as z:
        assert json.loads(str(z["meta"]))["format_version"] == 2
    write_v1_state(clf, tmp_path / "v1.npz")
    for name in ("v1.npz", "v2.npz"):
        back = FewShotClassifier.load(SHIPPED, tmp_path / name, delegate="cpu")
        assert back.predict([img]) == ["a"]
    assert load_state(tmp_path / "v1.npz").images is None


def _keyed_png(path: Path, mode: str) -> None:
    """A PNG whose transparency is a colour key (tRNS): black background, transparent; a red/gray square."""
    if mode == "RGB":
        a = np.zeros((24, 24, 3), np.uint8)
        a[6:18, 6:18] = (200, 30, 30)
        Image.fromarray(a, "RGB").save(path, transparency=(0, 0, 0))
    else:
        a = np.zeros((24, 24), np.uint8)
        a[6:18, 6:18] = 120
        Image.fromarray(a, "L").save(path, transparency=0)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_key_transparency_is_composited_onto_the_background(tmp_path, mode):
    p = tmp_path / f"key-{mode}.png"
    _keyed_png(p, mode)
    assert read_image(p).shape == (24, 24, 4)  # the key became alpha
    for shape in ((24, 24, 1), (24, 24, 3)):
        x = as_model_input(str(p), shape)
        assert x.shape == (1, *shape)
        assert np.all(x[0, :4] == 0) and np.all(
            x[0, :, :4] == 0
        )  # the black key is background, not ink
        assert x[0, 12, 12].min() > 0.2  # the square is ink
    rgb = as_model_input(str(p), (24, 24, 3))[0, 12, 12]
    if mode == "RGB":
        assert rgb[0] < rgb[1] and rgb[0] < rgb[2]  # red: least ink in the red channel
    else:
        assert np.allclose(rgb, rgb[0])


def test_rgb_input_forms_and_one_line_errors():
    rng = np.random.default_rng(0)
    img = draw("disc", HUES[0], rng)
    a = as_model_input(img, (SIZE, SIZE, 3))
    rgba = np.concatenate([img, np.full((SIZE, SIZE, 1), 255, np.uint8)], -1)
    assert np.allclose(as_model_input(rgba, (SIZE, SIZE, 3)), a)
    assert np.allclose(
        as_model_input([img.astype(np.float32) / 255], (SIZE, SIZE, 3)), a, atol=1e-6
    )
    gray = np.full((SIZE, SIZE), 100, np.uint8)
    g = as_model_input(gray, (SIZE, SIZE, 3))
    assert g.shape == (1, SIZE, SIZE, 3) and np.allclose(
        g, 1 - 100 / 255
    )  # gray repeated on the channels
    transparent = rgba.copy()
    transparent[..., 3] = 0
    assert np.all(
        as_model_input(transparent, (SIZE, SIZE, 3)) == 0
    )  # fully transparent: background
    with pytest.raises(InputError) as e:
        as_model_input(np.moveaxis(img, -1, 0), (SIZE, SIZE, 3))
    assert_one_line(e.value, InputError)
    assert "channel-first" in str(e.value)
    assert as_model_input(np.moveaxis(img, -1, 0), (28, 28, 1)).shape == (
        3,
        28,
        28,
        1,
    )  # gray: a batch, as before
    with pytest.raises(InputError) as e:
        as_model_input(np.zeros((SIZE, SIZE, 2), np.uint8), (SIZE, SIZE, 3))
    assert_one_line(e.value, InputError)


@pytest.mark.slow
def test_manifest_colour_must_fit_the_channels(rgb_bundle, tmp_path):
    import shutil

    from runtime_kit import rehash

    from metalite.runtime.bundle import open_bundle

    b = shutil.copytree(rgb_bundle["bundle"], tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["input"]["preprocess"]["color"] = "L"
    rehash(b, m)
    with pytest.raises(BundleError) as e:
        open_bundle(b)
    assert_one_line(e.value, BundleError)
    assert "does not fit" in str(e.value)
    m["input"]["shape"][2] = 4
    rehash(b, m)
    with pytest.raises(BundleError, match="supports 1 \\(gray\\) or 3 \\(RGB\\)"):
        open_bundle(b)


def test_colour_augmentation_changes_colour_not_gray():
    from metalite.training.augment import Augment

    rng = np.random.default_rng(0)
    x = (
        1
        - np.stack([draw("disc", HUES[0], rng), np.full((SIZE, SIZE, 3), 128, np.uint8)]).astype(
            np.float32
        )
        / 255
    )
    aug = Augment(hue=60.0, saturation=0.3)
    y = aug(np.random.default_rng(1), x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert np.abs(y[0] - x[0]).max() > 0.05  # the red disc changed colour
    assert np.allclose(y[1], x[1], atol=1e-5)  # a gray image has no hue or saturation to change
    tinted = Augment(background=0.5)(np.random.default_rng(2), x[:1])
    corner, centre = (
        np.abs(tinted[0, 0, 0] - x[0, 0, 0]).max(),
        np.abs(tinted[0, 10, 10] - x[0, 10, 10]).max(),
    )
    assert corner > 0 and centre == 0  # background tinted, the disc left alone
    assert Augment(hue=90.0)(rng, x[..., :1]).shape == (
        2,
        SIZE,
        SIZE,
        1,
    )  # gray input: colour keys do nothing


@pytest.mark.slow
def test_colour_classes_and_examples_travel_through_a_real_fleet_server(rgb_bundle, tmp_path):
    from fleetkit import Server

    from metalite.fleet import FleetRoot, enroll, iter_examples, publish
    from metalite.runtime.sync import (
        DeviceHome,
        FleetClient,
        parse_public_key,
        pull_class,
        share_class,
        sync,
    )
    from metalite.runtime.sync.classes import fetch_class
    from metalite.runtime.sync.wire import decode_image as from_wire
    from metalite.runtime.sync.wire import encode_image as to_wire

    img = draw("square", HUES[3], np.random.default_rng(4))
    assert np.array_equal(from_wire(to_wire(img)), img) and to_wire(img)["channels"] == 3
    gray_wire = to_wire(img[..., 0])
    assert gray_wire["channels"] == 1 and np.array_equal(
        from_wire({k: v for k, v in gray_wire.items() if k != "channels"}), img[..., 0]
    )

    srv = Server(tmp_path / "root", tmp_path / "serve.log").start()
    try:
        root = FleetRoot(srv.root)
        publish(root, rgb_bundle["bundle"], note="rgb")
        key = parse_public_key(srv.public_key())
        tokens = {n: enroll(root, n) for n in ("pi-a", "pi-b")}
        homes = {n: DeviceHome(tmp_path / n) for n in tokens}
        for n in tokens:
            sync(homes[n], srv.url, tokens[n], key, delegate="cpu", share_support=False)
        rng = np.random.default_rng(8)
        a = homes["pi-a"].classifier(delegate="cpu")
        a.fit(
            {
                "magenta": np.stack([draw("ring", MAGENTA, rng) for _ in range(2)]),
                "green": np.stack([draw("ring", GREEN, rng) for _ in range(2)]),
            }
        )
        homes["pi-a"].save(a)
        share_class(homes["pi-a"], FleetClient(srv.url, tokens["pi-a"]), "magenta")
        got = fetch_class(FleetClient(srv.url, tokens["pi-b"]), "magenta")
        assert got.shape == (2, SIZE, SIZE, 3)
        assert np.array_equal(got, a.support_images()["magenta"])
        b = homes["pi-b"].classifier(delegate="cpu").fit({"green": draw("ring", GREEN, rng)})
        homes["pi-b"].save(b)
        pull_class(homes["pi-b"], FleetClient(srv.url, tokens["pi-b"]), "magenta", delegate="cpu")
        b = homes["pi-b"].classifier(delegate="cpu")
        q = _paired_queries(6, seed=11)
        assert np.mean(np.array(b.predict(q["magenta"])) == "magenta") >= 0.8
        # support examples upload in colour too (PPM on the server)
        sync(homes["pi-a"], srv.url, tokens["pi-a"], key, delegate="cpu", share_support=True)
        shapes = {ex["image"].shape for ex in iter_examples(root)}
        assert shapes == {(SIZE, SIZE, 3)}
    finally:
        srv.stop()


def test_emoji_fixture_is_colour_split_by_category_with_artists_as_drawers(tmp_path, monkeypatch):
    from metalite.training.datasets import EMOJI_TEST_GROUPS, load_data

    monkeypatch.setenv("METALITE_CACHE", str(tmp_path / "cache"))
    spec = f"emoji:{EMOJI}"
    full = load_data(spec, 32, "all")
    assert full.channels == 3 and full.images.shape[1:] == (32, 32, 3)
    assert set(np.unique(full.drawers)) <= {1, 2, 3} and len(np.unique(full.drawers)) >= 2
    parts = {s: load_data(spec, 32, s) for s in ("train", "val", "test")}
    assert set(parts["test"].groups) == set(EMOJI_TEST_GROUPS)
    assert not (set(parts["train"].groups) | set(parts["val"].groups)) & set(EMOJI_TEST_GROUPS)
    assert not set(parts["train"].groups) & set(parts["val"].groups)
    assert sum(p.num_classes for p in parts.values()) == full.num_classes
    gray = load_data(spec, 32, "test", channels=1)
    assert gray.channels == 1 and gray.images.shape[0] == parts["test"].images.shape[0]


def test_a_gray_folder_stays_gray_even_in_rgb_files(tmp_path, monkeypatch):
    from metalite.training.datasets import load_data

    monkeypatch.setenv("METALITE_CACHE", str(tmp_path / "cache"))
    for c in range(3):
        d = tmp_path / "f" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(2):
            g = np.full((16, 16), 255, np.uint8)
            g[c * 4 : c * 4 + 4] = 0
            Image.fromarray(np.repeat(g[..., None], 3, -1), "RGB").save(d / f"{i}.png")
    data = load_data(f"folder:{tmp_path / 'f'}", 16, "all")
    assert data.channels == 1 and data.images.shape == (6, 16, 16)
    assert load_data(f"folder:{tmp_path / 'f'}", 16, "all", channels=3).images.shape == (
        6,
        16,
        16,
        3,
    )


def test_cross_artist_episodes_and_baselines_on_the_fixture(tmp_path, monkeypatch):
    from metalite.training import crossdrawer as cd
    from metalite.training.datasets import load_data

    monkeypatch.setenv("METALITE_CACHE", str(tmp_path / "cache"))
    data = load_data(f"emoji:{EMOJI}", 32, "all")
    eps = cd.episodes(data, 5, 50, seed=1)
    for (
        s,
        q,
    ) in (
        eps
    ):  # the same concepts in the same order, every support by one artist, every query by another
        assert np.array_equal(data.labels[s], data.labels[q]) and len(set(data.labels[s])) == 5
        assert (
            len(set(data.drawers[s])) == len(set(data.drawers[q])) == 1
            and data.drawers[s[0]] != data.drawers[q[0]]
        )
    again = cd.episodes(
        data, 5, 50, seed=1
    )  # reproducible: every method can answer the same episodes
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(eps, again)
    )
    hist = cd.histogram_features(data)
    assert hist.shape == (len(data.images), 512) and np.allclose(hist.sum(1), 1)
    for feats, metric in ((cd.pixel_features(data), "l2"), (hist, "l1")):
        r = cd.score(cd.nearest_neighbour(feats, metric), data, eps)
        assert (
            0.2 < r["mean"] <= 1.0
            and r["episodes"] == 50
            and set(r["per_category"]) == set(data.groups)
        )
    # a perfect classifier scores 1, one that always answers 0 scores 1/ways: the scoring itself is right
    assert cd.score(lambda s, q: np.arange(len(q)), data, eps)["mean"] == 1.0
    assert cd.score(lambda s, q: np.zeros(len(q), int), data, eps)["mean"] == pytest.approx(0.2)
    with pytest.raises(Exception, match="no two drawers share"):
        cd.episodes(data, 11, 5)
