"""Device-side accuracy options: shift averaging (runtime.tta) and transductive refinement (head.refine)."""

from __future__ import annotations

import numpy as np
import pytest

from metalite.runtime import BundleError, FewShotClassifier
from metalite.runtime import head as headlib
from metalite.runtime.tta import SHIFTS, check_copies, shift_average, shifted

SIZE = 28


def test_shifted_moves_ink_and_fills_paper():
    x = np.zeros((1, 5, 5, 1), np.float32)
    x[0, 0, 0] = x[0, 2, 2] = 1
    y = shifted(x, 1, -1)
    assert np.argwhere(y[0, ..., 0]).tolist() == [
        [3, 1]
    ]  # (0, 0) left the image; nothing wraps around
    np.testing.assert_array_equal(shifted(x, 0, 0), x)


def test_shift_average_is_the_mean_over_copies():
    rng = np.random.default_rng(0)
    x = rng.random((3, 6, 6, 1)).astype(np.float32)
    w = rng.standard_normal((36, 4)).astype(np.float32)
    calls = []

    def embed(b):
        calls.append(len(b))
        return b.reshape(len(b), -1) @ w

    np.testing.assert_allclose(shift_average(embed, x, 0), embed(x))
    calls.clear()
    want = np.mean([embed(shifted(x, dy, dx)) for dy, dx in [(0, 0)] + SHIFTS[4]], axis=0)
    calls.clear()
    np.testing.assert_allclose(shift_average(embed, x, 4), want, rtol=1e-5)
    assert calls == [15]  # one backbone call for the image and its four copies
    for bad in (2, -1, True, 4.0, "4"):
        with pytest.raises(ValueError, match=r"shift copies must be one of \[0, 4, 8\]"):
            check_copies(bad)


def _soft_kmeans(hs, hq, scale, iterations):
    """The refinement written out directly (1-shot: the first prototypes are the support)."""
    c = hs.copy()
    for _ in range(iterations):
        p = headlib.softmax(-scale * ((hq[:, None] - c[None]) ** 2).sum(-1))
        c = (hs + p.T @ hq) / (1 + p.sum(0))[:, None]
    return ((hq[:, None] - c[None]) ** 2).sum(-1)


def test_refine_is_soft_kmeans_over_the_queries():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 6)).astype(np.float32)
    spec = headlib.HeadSpec(
        [(w, np.zeros(6, np.float32))], ["linear"], {"steps": 0, "lr": 0.5, "scale": 0.5}
    )
    s, q, y = rng.standard_normal((5, 8)), rng.standard_normal((9, 8)), np.arange(5)
    head = headlib.adapt(spec, s, y, 5)
    refined = headlib.refine(head, s, y, q, 0.5, iterations=3)
    d = _soft_kmeans((s @ w).astype(np.float32), (q @ w).astype(np.float32), 0.5, 3)
    np.testing.assert_array_equal(refined.logits(q).argmax(1), d.argmin(1))
    assert not np.allclose(
        refined.classifier[0], head.classifier[0]
    )  # the queries moved the prototypes


def test_refine_pulls_prototypes_toward_their_query_clusters():
    """Support drawings off-centre, queries around the true centres: refinement fixes the boundary."""
    spec = headlib.HeadSpec([], [], {"steps": 0, "lr": 0.5, "scale": 1.0})
    support = np.array(
        [[0.9, 0.0], [3.0, 0.0]]
    )  # class 0 drawn too far right, class 1 too far right
    queries = np.array([[-0.1, 0.0], [0.0, 0.0], [0.1, 0.0], [1.8, 0.0], [1.9, 0.0], [2.0, 0.0]])
    truth = np.array([0, 0, 0, 1, 1, 1])
    head = headlib.adapt(spec, support, np.arange(2), 2)
    plain = head.logits(queries).argmax(1)
    refined = headlib.refine(head, support, np.arange(2), queries, 1.0).logits(queries).argmax(1)
    assert (plain == truth).mean() < 1.0 and (refined == truth).all()


# ---- through the classifier, on a real tiny bundle ---------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from metalite.export.bundle import write_bundle
    from metalite.export.tfcompat import tf
    from metalite.training.models import build_backbone

    tf.random.set_seed(0)
    model = build_backbone(
        {"kind": "conv4", "filters": 8, "embedding_dim": 8}, input_shape=(SIZE, SIZE, 1)
    )
    rep = np.random.default_rng(0).random((32, SIZE, SIZE, 1)).astype(np.float32)
    spec = headlib.HeadSpec([], [], {"steps": 0, "lr": 0.5, "scale": 1.0, "tta": 4})
    return write_bundle(tmp_path_factory.mktemp("b") / "tta", model, spec, rep, {}, progress=False)


def _images(n, seed):
    rng = np.random.default_rng(seed)
    imgs = np.full((n, SIZE, SIZE), 255, np.uint8)
    for i in range(n):
        y, x = rng.integers(4, 20, 2)
        imgs[i, y : y + 6, x : x + 3] = 0
    return imgs


def test_classifier_uses_the_bundles_tta_and_keeps_it_in_its_state(bundle, tmp_path):
    imgs = _images(6, 0)
    plain, averaged = FewShotClassifier(bundle, tta=0), FewShotClassifier(bundle)
    assert (plain.tta, averaged.tta) == (0, 4)
    x = 1.0 - imgs[..., None].astype(np.float32) / 255.0
    want = np.mean(
        [
            plain.embed(np.rint(255 * (1 - shifted(x, dy, dx)[..., 0])).astype(np.uint8))
            for dy, dx in [(0, 0)] + SHIFTS[4]
        ],
        axis=0,
    )
    np.testing.assert_allclose(averaged.embed(imgs), want, rtol=1e-5, atol=1e-6)
    plain.fit(imgs[:3], ["a", "b", "c"]).save(tmp_path / "s.npz")
    restored = FewShotClassifier.load(bundle, tmp_path / "s.npz")
    assert restored.tta == 0  # queries are embedded as the saved support embeddings were
    assert restored.predict(imgs[3:]) == plain.predict(imgs[3:])
    with pytest.raises(BundleError, match="shift copies must be one of"):
        FewShotClassifier(bundle, tta=3)


def test_transductive_predict_is_opt_in(bundle):
    imgs = _images(12, 1)
    clf = FewShotClassifier(bundle, tta=0).fit(imgs[:4], [0, 1, 2, 3])
    emb = clf.embed(imgs[4:])
    expect = (
        headlib.refine(clf.head, clf.embed(imgs[:4]), np.arange(4), emb, 1.0).logits(emb).argmax(1)
    )
    assert clf.predict(imgs[4:], transductive=True) == [int(i) for i in expect]
    assert clf.predict(imgs[4:]) == [int(i) for i in clf.head.logits(emb).argmax(1)]
    p = clf.predict_proba(imgs[4:], transductive=True)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def _clusters(seed=0, n_classes=10, dim=16, spread=0.7, scale=0.2):
    """A prototype head (no hidden layer) on one noisy support point per class, and a query sampler: classes
    that overlap enough for soft assignments to spread (as 20-way Omniglot's do)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)).astype(np.float32)
    support = (centres + spread * rng.standard_normal((n_classes, dim))).astype(np.float32)
    spec = headlib.HeadSpec([], [], {"steps": 0, "lr": 0.01, "scale": scale, "adapt": "classifier"})
    head = headlib.adapt(spec, support, np.arange(n_classes), n_classes)

    def draw(classes, k):
        y = np.repeat(classes, k)
        return (centres[y] + spread * rng.standard_normal((len(y), dim))).astype(np.float32), y

    return support, head, draw


def test_transductive_refinement_never_moves_classes_absent_from_an_unbalanced_batch():
    support, head, draw = _clusters()
    q, y = draw([0], 15)  # every query of one class
    after = headlib.refine(head, support, np.arange(10), q, 0.2)
    # soft weights everywhere (cover 0): the refinement that moved the classes absent from the batch
    before = headlib.refine(head, support, np.arange(10), q, 0.2, cover=0.0)
    chosen = set(head.logits(q).argmax(1).tolist()) | set(after.logits(q).argmax(1).tolist())
    absent = [k for k in range(10) if k not in chosen]
    assert absent
    w0, b0 = head.classifier
    np.testing.assert_allclose(after.classifier[0][:, absent], w0[:, absent], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after.classifier[1][absent], b0[absent], rtol=1e-5, atol=1e-5)
    assert not np.allclose(
        before.classifier[0][:, absent], w0[:, absent], atol=1e-2
    )  # soft weights moved them


def test_transductive_refinement_helps_balanced_batches_and_costs_nothing_on_unbalanced_ones():
    acc = lambda h, q, y: float(np.mean(h.logits(q).argmax(1) == y))  # noqa: E731
    gain = {(n, cover): [] for n in ("one", "two", "balanced") for cover in (0.0, headlib.COVER)}
    for seed in range(20):
        support, head, draw = _clusters(seed)
        for name, classes, k in (
            ("one", [0], 15),
            ("two", [0, 1], 8),
            ("balanced", list(range(10)), 5),
        ):
            q, y = draw(classes, k)
            for cover in (0.0, headlib.COVER):
                refined = headlib.refine(head, support, np.arange(10), q, 0.2, cover=cover)
                gain[(name, cover)].append(acc(refined, q, y) - acc(head, q, y))
    mean = {key: float(np.mean(v)) for key, v in gain.items()}
    assert mean[("balanced", headlib.COVER)] > 0.03, mean
    assert mean[("one", headlib.COVER)] > -0.02 and mean[("two", headlib.COVER)] > -0.02, mean
    assert mean[("one", 0.0)] < -0.1, mean  # what always-soft refinement did to one class's queries
