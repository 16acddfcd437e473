"""The built-in glyphs dataset: class list, determinism, pixel convention, distortion, deduplication, cache."""

import numpy as np
import pytest

from metalite.training import glyphs


@pytest.fixture(scope="module")
def classes():
    return glyphs.glyph_classes()


def _by_char(classes, chars):
    index = {cp: c for c in classes for cp in [c[0]]}
    return [index[ord(ch)] for ch in chars if ord(ch) in index]


def test_at_least_1000_distinct_classes_with_groups(classes):
    assert len(classes) >= 1000
    cps = [c[0] for c in classes]
    assert len(set(cps)) == len(cps)
    groups = {c[1] for c in classes}
    assert {"Latin", "Greek", "Cyrillic", "Math", "Arrows"} <= groups
    assert all(c[2] and set(c[2]) <= set(glyphs.FONTS) for c in classes)


def test_lookalikes_merged(classes):
    """Greek Alpha and Cyrillic A draw like Latin A: only the Latin one survives deduplication."""
    cps = {c[0] for c in classes}
    assert ord("A") in cps and 0x0391 not in cps and 0x0410 not in cps
    assert ord("B") in cps and 0x0392 not in cps
    assert 0x03B1 in cps  # Greek small alpha differs from "a": kept


def test_render_deterministic_and_seed_dependent(classes):
    subset = _by_char(classes, "Aж∑")
    a = glyphs._render(subset, image_size=28, samples_per_class=4, seed=7)
    b = glyphs._render(subset, image_size=28, samples_per_class=4, seed=7)
    c = glyphs._render(subset, image_size=28, samples_per_class=4, seed=8)
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    # independent of which other classes are rendered alongside
    alone = glyphs._render(subset[1:2], image_size=28, samples_per_class=4, seed=7)
    assert np.array_equal(alone[0], a[1])


def test_pixel_convention_and_distortion(classes):
    subset = classes[::300]
    imgs = glyphs._render(subset, image_size=28, samples_per_class=5, seed=0)
    assert imgs.dtype == np.uint8 and imgs.shape == (len(subset), 5, 28, 28)
    assert np.median(imgs) == 255  # mostly paper
    ink = (imgs < 128).mean(axis=(2, 3))
    assert (ink > 0.01).all() and (ink < 0.6).all()  # every image has ink, none is a filled box
    for cls in imgs:  # samples of a class are distorted differently
        flat = cls.reshape(len(cls), -1).astype(int)
        assert all(np.abs(flat[i] - flat[j]).mean() > 2 for i in range(5) for j in range(i))


def _mean_image_distance(imgs):
    m = (1 - imgs.astype(np.float64) / 255).mean(axis=1).reshape(len(imgs), -1)
    return glyphs._shape_distances(m)


def test_no_duplicate_classes(classes):
    """Lookalike-prone kept classes have clearly distinct mean images, unlike a true duplicate pair."""
    subset = _by_char(classes, "AaBbEeOoIl|HhKkMmPpTtXxYy01-—~ÀÉØ←∑●■□△")
    imgs = glyphs._render(subset, image_size=28, samples_per_class=30, seed=0)
    d = _mean_image_distance(imgs)
    np.fill_diagonal(d, np.inf)
    # what dedup prevents: Latin A and Greek Alpha (same outline) as two classes
    fonts = tuple(f for f in _by_char(classes, "A")[0][2] if 0x0391 in glyphs._font_tables()[f])
    pair = glyphs._render(
        [(ord("A"), "Latin", fonts), (0x0391, "Greek", fonts)],
        image_size=28,
        samples_per_class=30,
        seed=0,
    )
    dup = _mean_image_distance(pair)[0, 1]
    assert dup < 0.04
    i, j = np.unravel_index(np.argmin(d), d.shape)
    assert d[i, j] > dup, (chr(subset[i][0]), chr(subset[j][0]), d[i, j], dup)


def test_canonical_bitmaps_all_distinct(classes):
    """Every pair of kept classes is farther apart than the dedup threshold (A vs Alpha would be ~0)."""
    tables = glyphs._font_tables()
    feats = np.asarray([glyphs._canonical(cp, fonts, tables) for cp, _, fonts in classes])
    d = glyphs._shape_distances(feats)
    np.fill_diagonal(d, np.inf)
    assert d.min() >= glyphs._DEDUP_THRESHOLD
    alpha = glyphs._canonical(0x0391, ("DejaVuSans",), tables)
    latin_a = glyphs._canonical(ord("A"), ("DejaVuSans",), tables)
    assert glyphs._shape_distances(np.stack([alpha, latin_a]))[0, 1] < glyphs._DEDUP_THRESHOLD


def test_load_glyphs_caches(tmp_path, monkeypatch, classes):
    """Full load (small samples) writes one npz and the second call reads it back identically."""
    calls = []
    real = glyphs._render

    def spy(*a, **k):
        calls.append(1)
        return real(classes[:50], *a[1:], **k)  # keep the test fast: render a prefix only

    monkeypatch.setattr(glyphs, "_render", spy)
    monkeypatch.setattr(glyphs, "glyph_classes", lambda: classes[:50])
    imgs, names, groups = glyphs.load_glyphs(
        image_size=20, samples_per_class=3, seed=1, cache_dir=tmp_path, progress=False
    )
    assert imgs.shape == (50, 3, 20, 20) and imgs.dtype == np.uint8
    assert names[0].startswith("U+0021 ") and len(groups) == 50
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    again = glyphs.load_glyphs(
        image_size=20, samples_per_class=3, seed=1, cache_dir=tmp_path, progress=False
    )
    assert len(calls) == 1
    assert np.array_equal(again[0], imgs) and again[1] == names and again[2] == groups
