"""metalite.runtime on real (tiny) bundles written by metalite.export.bundle.write_bundle.

One session-scoped bundle (Conv4, 16 filters, 16-d embedding, random weights, one linear hidden head
layer, 5 adaptation steps) is built once; its random features separate simple ink shapes well enough
for few-shot tests. Everything else copies or edits that bundle.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pytest

from repo_paths import REPO
from runtime_kit import N_SHAPES, SIZE, rewrite_manifest, shapes

from metalite.runtime import (
    BundleError,
    DelegateError,
    EdgeTPUFallbackWarning,
    FewShotClassifier,
    InputError,
    NotFittedError,
    StateError,
    UnknownClassError,
)
from metalite.runtime import head as headlib
from metalite.runtime.embedder import Embedder
from metalite.runtime.interpreter import make_interpreter

# ----------------------------------------------------------------------------- runtime fixtures
HEAD_ADAPTATION = {"steps": 5, "lr": 0.01, "scale": 100.0, "adapt": "head"}


@pytest.fixture(scope="session")
def keras_backbone():
    """(tf_keras Conv4 backbone with random weights, float32 (64, 28, 28, 1) representative model input)."""
    from metalite.export.tfcompat import tf
    from metalite.runtime.preprocess import to_model_input
    from metalite.training.models import build_backbone

    tf.random.set_seed(0)
    model = build_backbone(
        {"kind": "conv4", "filters": 16, "embedding_dim": 16}, input_shape=(SIZE, SIZE, 1)
    )
    # Kernels drawn from numpy: TensorFlow's initializers depend on what ran before in the process, and
    # some draws separate the test shapes too poorly for the few-shot assertions (a flaky test).
    rng = np.random.default_rng(0)
    model.set_weights(
        [
            (rng.standard_normal(w.shape) * np.sqrt(2.0 / np.prod(w.shape[:-1]))).astype(np.float32)
            if w.ndim == 4
            else w
            for w in model.get_weights()
        ]
    )
    imgs, _ = shapes(range(N_SHAPES), 8, seed=0)
    return model, to_model_input(imgs, (SIZE, SIZE))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, keras_backbone):
    """A real bundle directory written by ``write_bundle`` (CPU model only)."""
    from metalite.export.bundle import write_bundle

    model, rep = keras_backbone
    rng = np.random.default_rng(0)
    w = (np.eye(16) + 0.1 * rng.standard_normal((16, 16))).astype(np.float32)
    spec = headlib.HeadSpec([(w, np.zeros(16, np.float32))], ["linear"], dict(HEAD_ADAPTATION))
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return write_bundle(out, model, spec, rep, {"training": {"algorithm": "test"}}, progress=False)


@pytest.fixture(scope="session")
def edgetpu_bundle_dir(tmp_path_factory, bundle_dir):
    """The bundle plus a ``backbone_edgetpu.tflite`` (a copy of the CPU model; only libedgetpu is missing)."""
    out = tmp_path_factory.mktemp("bundles") / "with_edgetpu"
    shutil.copytree(bundle_dir, out)
    shutil.copy(out / "backbone.tflite", out / "backbone_edgetpu.tflite")

    def edit(m):
        m["backbone"]["edgetpu_file"] = "backbone_edgetpu.tflite"
        m["files"]["backbone_edgetpu.tflite"] = {}

    rewrite_manifest(out, edit)
    return out


@pytest.fixture(scope="session")
def clf(bundle_dir):
    """A shared classifier (tests that fit it must not rely on its earlier state)."""
    return FewShotClassifier(bundle_dir, delegate="cpu")


def _libedgetpu_present() -> bool:
    try:
        ctypes.CDLL("libedgetpu.so.1")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------- fit / predict
def test_fit_predict_separable(clf):
    sup, lab = shapes(range(5), 5, seed=1)
    qry, qlab = shapes(range(5), 10, seed=2)
    assert clf.fit(sup, lab) is clf
    assert clf.classes == [f"shape{k}" for k in range(5)]
    pred = clf.predict(qry)
    assert len(pred) == len(qry)
    assert np.mean([p == t for p, t in zip(pred, qlab)]) >= 0.9
    proba = clf.predict_proba(qry)
    assert proba.dtype == np.float32 and proba.shape == (50, 5)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert [clf.classes[i] for i in proba.argmax(axis=1)] == pred


def test_adaptation_equals_head_adapt_on_embed(clf):
    sup, lab = shapes([0, 3, 5], 4, seed=3)
    clf.fit(sup, lab)
    emb = clf.embed(sup)
    assert emb.dtype == np.float32 and emb.shape == (12, clf.embedding_dim)
    y = np.array([clf.classes.index(l) for l in lab])
    ref = headlib.adapt(clf.head_spec, emb, y, 3)
    assert clf.head_spec.adaptation["steps"] == HEAD_ADAPTATION["steps"]
    np.testing.assert_array_equal(clf.head.classifier[0], ref.classifier[0])
    np.testing.assert_array_equal(clf.head.classifier[1], ref.classifier[1])
    qry, _ = shapes([0, 3, 5], 3, seed=4)
    np.testing.assert_array_equal(clf.predict_proba(qry), ref.predict_proba(clf.embed(qry)))


def test_embed_is_quantized_backbone_output(clf, bundle_dir):
    """embed = scale * (int8 output - zero_point) of backbone.tflite run on the quantized model input."""
    from metalite.runtime.preprocess import to_model_input

    imgs, _ = shapes([1, 2], 2, seed=5)
    m = json.loads((bundle_dir / "manifest.json").read_text())
    qi, qo = m["input"]["quantization"], m["output"]["quantization"]
    interp = make_interpreter(bundle_dir / "backbone.tflite")
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = to_model_input(imgs, (SIZE, SIZE))
    q = np.clip(np.round(x / qi["scale"]) + qi["zero_point"], -128, 127).astype(np.int8)
    rows = []
    for img in q:
        interp.set_tensor(inp["index"], img[None])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0])
    ref = qo["scale"] * (np.stack(rows).astype(np.float32) - qo["zero_point"])
    np.testing.assert_allclose(clf.embed(imgs), ref, rtol=1e-6)


def test_image_forms_agree(clf, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    img = shapes([4], 1, seed=6)[0][0]
    ref = clf.embed(img)
    assert ref.shape == (1, clf.embedding_dim)
    rgb = np.repeat(img[..., None], 3, axis=-1)
    np.testing.assert_array_equal(clf.embed(img[..., None]), ref)
    np.testing.assert_allclose(clf.embed(rgb), ref, atol=1e-6)
    np.testing.assert_array_equal(clf.embed(img.astype(np.float32)), ref)  # float pixels 0..255
    np.testing.assert_array_equal(clf.embed(np.stack([img, img])), np.vstack([ref, ref]))
    np.testing.assert_array_equal(clf.embed(np.stack([img, img])[..., None]), np.vstack([ref, ref]))
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    np.testing.assert_array_equal(clf.embed(path), ref)
    np.testing.assert_array_equal(clf.embed([str(path), img, path]), np.vstack([ref, ref, ref]))
    big = np.kron(img, np.ones((2, 2), np.uint8))  # 56x56: area-resized back to exactly img
    np.testing.assert_array_equal(clf.embed([big]), ref)


def test_batched_embedding_matches_one_by_one(bundle_dir):
    c = FewShotClassifier(bundle_dir, delegate="cpu", batch_size=32, cache_size=0)
    imgs, _ = shapes(range(N_SHAPES), 9, seed=7)  # 72 images: chunks 32, 32, 8
    before = c.embedder.invocations
    batched = c.embed(imgs)
    assert c.embedder.invocations - before == 3
    resizes = c.embedder.resizes
    c.embed(imgs[:32])
    c.embed(imgs[32:64])
    assert c.embedder.resizes == resizes + 1  # only 8 -> 32; 32 -> 32 reuses the allocation
    single = np.vstack([c.embed(im) for im in imgs[:5]])
    np.testing.assert_array_equal(batched[:5], single)


def test_static_batch_model_loops(tmp_path, keras_backbone, clf):
    """A batch-1 model (what the Edge TPU gets) is run image by image with the same results."""
    from metalite.export.tflite import convert_int8
    from metalite.runtime.preprocess import to_model_input

    model, rep = keras_backbone
    path = tmp_path / "b1.tflite"
    path.write_bytes(convert_int8(model, rep, batch=1))
    emb = Embedder(make_interpreter(path))
    assert not emb.dynamic_batch
    imgs, _ = shapes([0, 1, 2], 2, seed=8)
    out = emb(to_model_input(imgs, (SIZE, SIZE)))
    assert emb.invocations == 6 and emb.resizes == 0
    step = emb.output_quantization[0]
    np.testing.assert_allclose(out, clf.embed(imgs), atol=2 * step + 1e-7)


# ----------------------------------------------------------------------------- add / remove / cache
def _same_fit(a: FewShotClassifier, b: FewShotClassifier, qry) -> None:
    assert a.classes == b.classes
    np.testing.assert_array_equal(a.head.classifier[0], b.head.classifier[0])
    np.testing.assert_array_equal(a.head.classifier[1], b.head.classifier[1])
    for (wa, ba), (wb, bb) in zip(a.head.weights, b.head.weights):
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(ba, bb)
    np.testing.assert_array_equal(a.predict_proba(qry), b.predict_proba(qry))


def test_add_and_remove_class_equal_fit_on_union(bundle_dir):
    sup, lab = shapes(range(4), 3, seed=9)
    qry, _ = shapes(range(4), 2, seed=10)
    union = FewShotClassifier(bundle_dir, delegate="cpu").fit(sup, lab)
    added = (
        FewShotClassifier(bundle_dir, delegate="cpu")
        .fit(sup[:9], lab[:9])
        .add_class("shape3", sup[9:])
    )
    _same_fit(union, added, qry)
    extra, extra_lab = shapes([6], 3, seed=11)
    removed = FewShotClassifier(bundle_dir, delegate="cpu").fit(
        np.concatenate([sup, extra]), lab + extra_lab
    )
    assert removed.remove_class("shape6") is removed
    _same_fit(union, removed, qry)
    # removing from the middle keeps the column order of the others
    mid = FewShotClassifier(bundle_dir, delegate="cpu").fit(sup, lab).remove_class("shape1")
    assert mid.classes == ["shape0", "shape2", "shape3"]
    keep = [i for i, l in enumerate(lab) if l != "shape1"]
    _same_fit(
        FewShotClassifier(bundle_dir, delegate="cpu").fit(sup[keep], [lab[i] for i in keep]),
        mid,
        qry,
    )
    # labels of any hashable type; numpy scalars become Python scalars
    ints = FewShotClassifier(bundle_dir, delegate="cpu").fit(sup, np.repeat(np.arange(4), 3))
    assert ints.classes == [0, 1, 2, 3] and all(type(p) is int for p in ints.predict(qry))


def test_cache_hit_does_not_invoke_interpreter(bundle_dir):
    c = FewShotClassifier(bundle_dir, delegate="cpu")
    calls = []
    real_invoke = c.embedder.interpreter.invoke

    def counting_invoke():
        calls.append(1)
        return real_invoke()

    c.embedder.interpreter.invoke = counting_invoke
    sup, lab = shapes(range(3), 4, seed=12)
    c.fit(sup[:8], lab[:8])
    n = len(calls)
    assert n >= 1
    c.fit(sup[:8], lab[:8])  # re-fit: all cached
    c.add_class("shape2", sup[8:])  # new images: one call
    assert len(calls) == n + 1
    c.remove_class("shape0")
    c.add_class("shape0", sup[:4])  # re-adding known images: cached
    c.fit(sup, lab)
    c.embed(sup[3])
    assert len(calls) == n + 1
    assert c.cache.hits == 8 + 4 + 12 + 1  # refit, re-added class, fit on all, embed
    fresh = shapes([5], 2, seed=13)[0]
    c.embed(np.concatenate([fresh, fresh]))  # duplicates inside one batch are embedded once
    assert len(calls) == n + 2


# ----------------------------------------------------------------------------- bad input
def test_bad_input_one_line_errors_and_nothing_half_written(bundle_dir):
    c = FewShotClassifier(bundle_dir, delegate="cpu")
    sup, lab = shapes(range(3), 2, seed=14)
    with pytest.raises(NotFittedError, match="before fit"):
        c.predict(sup)
    with pytest.raises(NotFittedError):
        c.save("/nonexistent/never.npz")
    with pytest.raises(InputError, match="empty"):
        c.fit([], [])
    with pytest.raises(InputError, match="2 images but 3 labels"):
        c.fit(sup[:2], lab[:3])
    c.fit(sup, lab)
    before = (c.classes, c.head.classifier[0].copy(), c.predict_proba(sup))
    bad = [
        (lambda: c.fit(np.zeros((4, 28, 28, 2), np.uint8), ["a", "a", "b", "b"]), "channels"),
        (lambda: c.add_class("two", np.zeros((28, 28, 2), np.uint8)), "2 channels"),
        (lambda: c.add_class("nan", np.full((28, 28), np.nan, np.float32)), "NaN"),
        (lambda: c.add_class("empty", []), "no images"),
        (lambda: c.add_class("empty", np.zeros((0, 28, 28), np.uint8)), "no images"),
        (lambda: c.fit({"a": sup[:2], "b": []}), "class 'b'"),
        (lambda: c.fit({}), "empty support set"),
        (lambda: c.predict("/no/such/image.png"), "no such image file"),
        (lambda: c.predict(np.zeros((3, 0, 28), np.uint8)), "empty"),
        (lambda: c.predict(np.array(["x"], dtype=object)), "dtype"),
    ]
    for call, msg in bad:
        with pytest.raises(InputError, match=msg) as info:
            call()
        assert "\n" not in str(info.value)
    with pytest.raises(UnknownClassError, match="unknown class 'zzz'"):
        c.remove_class("zzz")
    assert c.classes == before[0]
    np.testing.assert_array_equal(c.head.classifier[0], before[1])
    np.testing.assert_array_equal(c.predict_proba(sup), before[2])
    for cls in (InputError, NotFittedError, UnknownClassError, BundleError, StateError):
        assert issubclass(cls, ValueError)
    # the last class removed: unfitted again
    for label in list(c.classes):
        c.remove_class(label)
    with pytest.raises(NotFittedError):
        c.predict(sup)


# ----------------------------------------------------------------------------- state
def test_save_load_roundtrip(bundle_dir, tmp_path):
    sup, lab = shapes(range(4), 3, seed=15)
    qry, _ = shapes(range(4), 3, seed=16)
    a = FewShotClassifier(bundle_dir, delegate="cpu").fit(sup, lab)
    path = tmp_path / "state.npz"
    a.save(path)
    assert path.is_file() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    b = FewShotClassifier.load(bundle_dir, path, delegate="cpu")
    assert b.classes == a.classes
    np.testing.assert_array_equal(b.predict_proba(qry), a.predict_proba(qry))
    assert b.predict(qry) == a.predict(qry)
    # support embeddings travel with the state: add/remove after load refit exactly as before saving
    new, new_lab = shapes([7], 3, seed=17)
    _same_fit(a.add_class("shape7", new), b.add_class("shape7", new), qry)
    _same_fit(a.remove_class("shape0"), b.remove_class("shape0"), qry)
    # int labels round-trip as ints; saving overwrites atomically
    c = FewShotClassifier(bundle_dir, delegate="cpu").fit(sup, [int(l[-1]) for l in lab])
    c.save(path)
    assert FewShotClassifier.load(bundle_dir, path, delegate="cpu").classes == [0, 1, 2, 3]


def test_corrupt_or_foreign_state_is_refused(bundle_dir, tmp_path):
    sup, lab = shapes(range(3), 2, seed=18)
    c = FewShotClassifier(bundle_dir, delegate="cpu").fit(sup, lab)
    good = tmp_path / "good.npz"
    c.save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match="truncated or corrupt") as info:
        FewShotClassifier.load(bundle_dir, truncated, delegate="cpu")
    assert "\n" not in str(info.value) and "truncated.npz" in str(info.value)
    for bad, msg in [(b"", "truncated or corrupt"), (b"not a zip at all", "truncated or corrupt")]:
        p = tmp_path / "bad.npz"
        p.write_bytes(bad)
        with pytest.raises(StateError, match=msg):
            FewShotClassifier.load(bundle_dir, p, delegate="cpu")
    with pytest.raises(StateError, match="no such state file"):
        FewShotClassifier.load(bundle_dir, tmp_path / "missing.npz", delegate="cpu")
    # an array changed behind the checksum's back
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["clf_b"] = arrays["clf_b"] + 1
    tampered = tmp_path / "tampered.npz"
    with open(tampered, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(StateError, match="checksum mismatch"):
        FewShotClassifier.load(bundle_dir, tampered, delegate="cpu")
    # a state adapted with another bundle
    other = tmp_path / "other_bundle"
    shutil.copytree(bundle_dir, other)
    rewrite_manifest(other, lambda m: m.update(created="2000-01-01T00:00:00Z"))
    with pytest.raises(StateError, match="different bundle"):
        FewShotClassifier.load(other, good, delegate="cpu")


# ----------------------------------------------------------------------------- bundle checks
def test_checksum_mismatch_names_the_file(bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    head = bytearray((bad / "head.npz").read_bytes())
    head[len(head) // 2] ^= 0xFF
    (bad / "head.npz").write_bytes(bytes(head))
    with pytest.raises(BundleError, match=r"head\.npz: sha256 mismatch") as info:
        FewShotClassifier(bad, delegate="cpu")
    assert "\n" not in str(info.value)
    (bad / "backbone.tflite").write_bytes((bundle_dir / "backbone.tflite").read_bytes()[:100])
    with pytest.raises(BundleError, match=r"backbone\.tflite: size 100 bytes"):
        FewShotClassifier(bad, delegate="cpu")
    (bad / "backbone.tflite").unlink()
    with pytest.raises(
        BundleError, match=r"backbone\.tflite: listed in manifest\.json but missing"
    ):
        FewShotClassifier(bad, delegate="cpu")


def test_manifest_problems(bundle_dir, tmp_path):
    cases = [
        (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
        (lambda m: m.update(format="something-else"), "format is 'something-else'"),
        (lambda m: m["output"].pop("embedding_dim"), "missing field 'output.embedding_dim'"),
        (
            lambda m: m["input"]["quantization"].update(scale=0.5),
            r"backbone\.tflite: input quantization",
        ),
        (
            lambda m: m["output"].update(embedding_dim=8),
            "does not match manifest.json embedding_dim",
        ),
    ]
    for i, (edit, msg) in enumerate(cases):
        d = tmp_path / f"b{i}"
        shutil.copytree(bundle_dir, d)
        rewrite_manifest(d, edit)
        with pytest.raises(BundleError, match=msg):
            FewShotClassifier(d, delegate="cpu")
    (tmp_path / "b0" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json.*not valid JSON"):
        FewShotClassifier(tmp_path / "b0")
    with pytest.raises(BundleError, match="no such bundle"):
        FewShotClassifier(tmp_path / "nowhere")


def test_zipped_bundle(bundle_dir, tmp_path, monkeypatch, clf):
    monkeypatch.setenv("METALITE_CACHE", str(tmp_path / "cache"))
    zpath = tmp_path / "bundle.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in bundle_dir.iterdir():
            z.write(p, f"tiny/{p.name}")
    imgs, _ = shapes([0, 1], 2, seed=19)
    for _ in range(2):  # second open reuses the extraction
        c = FewShotClassifier(zpath, delegate="cpu")
        np.testing.assert_array_equal(c.embed(imgs), clf.embed(imgs))
    assert len(list((tmp_path / "cache" / "bundles").iterdir())) == 1
    assert (
        c.bundle.manifest_sha256 == clf.bundle.manifest_sha256
    )  # a state saved with the dir loads with the zip
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(BundleError):
        FewShotClassifier(tmp_path / "junk.zip")


# ----------------------------------------------------------------------------- Edge TPU / interpreter
@pytest.mark.skipif(_libedgetpu_present(), reason="libedgetpu is installed here")
@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # TF Delegate.__del__ after a failed load
def test_edgetpu_required_but_missing(bundle_dir, edgetpu_bundle_dir):
    with pytest.raises(DelegateError, match="no Edge TPU model"):
        FewShotClassifier(bundle_dir, delegate="edgetpu")
    with pytest.raises(DelegateError, match=r"libedgetpu\.so\.1 could not be loaded") as info:
        FewShotClassifier(edgetpu_bundle_dir, delegate="edgetpu")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="delegate must be one of"):
        FewShotClassifier(bundle_dir, delegate="gpu")


@pytest.mark.skipif(_libedgetpu_present(), reason="libedgetpu is installed here")
@pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)  # TF Delegate.__del__ after a failed load
def test_auto_falls_back_to_cpu_with_one_warning(edgetpu_bundle_dir, bundle_dir):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        c = FewShotClassifier(edgetpu_bundle_dir, delegate="auto")
        sup, lab = shapes(range(3), 2, seed=20)
        c.fit(sup, lab).predict(sup)
        c.predict(sup)
    fallbacks = [w for w in rec if issubclass(w.category, EdgeTPUFallbackWarning)]
    assert len(fallbacks) == 1, [str(w.message) for w in rec]
    assert "libedgetpu" in str(fallbacks[0].message)
    assert c.device == "cpu"
    with warnings.catch_warnings(
        record=True
    ) as rec:  # no Edge TPU model in the bundle: nothing to warn about
        warnings.simplefilter("always")
        assert FewShotClassifier(bundle_dir, delegate="auto").device == "cpu"
    assert not [w for w in rec if issubclass(w.category, EdgeTPUFallbackWarning)]


def _run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_importing_runtime_never_imports_tensorflow():
    code = (
        "import sys\n"
        "import metalite.runtime, metalite.runtime.classifier, metalite.runtime.interpreter\n"
        "import metalite.tools.cli_runtime\n"
        "from metalite.runtime import FewShotClassifier, BundleError\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    r = _run_python(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


@pytest.mark.skipif(
    not any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime")),
    reason="only TensorFlow's interpreter is installed (then it is the lazy fallback)",
)
def test_fit_predict_without_tensorflow(bundle_dir):
    code = (
        "import sys, numpy as np\n"
        "from metalite.runtime import FewShotClassifier\n"
        f"c = FewShotClassifier({str(bundle_dir)!r}, delegate='cpu')\n"
        "x = np.full((4, 28, 28), 255, np.uint8); x[:2, 10:18, 10:18] = 0; x[2:, 5:8, :] = 0\n"
        "c.fit(x, ['a', 'a', 'b', 'b']); assert c.predict(x) == ['a', 'a', 'b', 'b']\n"
        "assert not [m for m in sys.modules if m.startswith('tensorflow')]\n"
        "print('ok', c.backend)\n"
    )
    r = _run_python(code)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


# ----------------------------------------------------------------------------- CLI
def test_cli_adapt_and_predict(bundle_dir, tmp_path):
    pytest.importorskip("PIL")
    import click
    from click.testing import CliRunner
    from PIL import Image

    from metalite.tools.cli_runtime import register

    @click.group()
    def group():
        pass

    register(group)
    sup, lab = shapes(range(3), 3, seed=21)
    for img, l in zip(sup, lab):
        d = tmp_path / "support" / l
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{len(list(d.iterdir()))}.png")
    qry, qlab = shapes(range(3), 1, seed=22)
    paths = []
    for i, img in enumerate(qry):
        paths.append(str(tmp_path / f"q{i}.png"))
        Image.fromarray(img).save(paths[-1])
    state = tmp_path / "out" / "state.npz"
    runner = CliRunner()
    r = runner.invoke(
        group,
        [
            "adapt",
            str(bundle_dir),
            str(tmp_path / "support"),
            "--out",
            str(state),
            "--delegate",
            "cpu",
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "adapted 3 classes from 9 images" in r.output and state.is_file()
    r = runner.invoke(group, ["predict", str(bundle_dir), "--state", str(state), *paths, "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [row["label"] for row in rows] == qlab
    assert all(0 < row["confidence"] <= 1 for row in rows)
    r = runner.invoke(group, ["predict", str(bundle_dir), "--state", str(state), paths[0]])
    assert r.exit_code == 0 and r.output.split("\t")[1] == qlab[0]
    (tmp_path / "support" / "empty_class").mkdir()
    r = runner.invoke(
        group, ["adapt", str(bundle_dir), str(tmp_path / "support"), "--out", str(state)]
    )
    assert r.exit_code != 0 and "has no images" in r.output
    r = runner.invoke(group, ["predict", str(bundle_dir), "--state", paths[0], paths[0]])
    assert r.exit_code == 1 and "Error:" in r.output and "Traceback" not in r.output


# ----------------------------------------------------------------------------- interpreter, delegate, log
def test_acceleration_says_what_runs_the_backbone(clf):
    from metalite.runtime.interpreter import describe

    acc = clf.acceleration
    assert acc.interpreter == clf.backend and acc.device == "cpu" and acc.model == "backbone.tflite"
    assert acc.version and acc.why.startswith(("first installed of", "METALITE_TFLITE="))
    # ai-edge-litert and tf.lite take the int8 graph whole onto their default XNNPACK delegate
    assert acc.delegate == "xnnpack" and acc.delegated == "whole graph", acc
    text = describe(acc)
    assert f"{acc.interpreter} {acc.version} on the CPU, XNNPACK delegate (whole graph" in text, (
        text
    )


def test_native_log_lines_go_to_the_logger(capfd, caplog):
    """Lines written to fd 2 by native code: interpreter chatter to the log, anything else back to stderr."""
    import logging

    from metalite.runtime.nativelog import native_stderr_to_log

    with caplog.at_level(logging.INFO, logger="metalite.runtime"), native_stderr_to_log():
        os.write(
            2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nERROR: something real\n"
        )
    err = capfd.readouterr().err
    assert "ERROR: something real" in err and "XNNPACK" not in err
    assert any(
        "interpreter: INFO: Created TensorFlow Lite XNNPACK" in r.getMessage()
        for r in caplog.records
    )


def test_cli_quiet_unless_verbose(bundle_dir, tmp_path):
    """`metalite adapt` prints no interpreter-library lines; with --verbose it says what runs and shows them.
    (A fresh process each: the library prints its line once per process.)"""
    from PIL import Image

    sup, lab = shapes(range(2), 2, seed=31)
    for i, (img, l) in enumerate(zip(sup, lab)):
        (tmp_path / "support" / l).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "support" / l / f"{i}.png")
    out = {}
    for flag in ([], ["--verbose"]):
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "metalite.tools.cli_runtime",
                "adapt",
                str(bundle_dir),
                str(tmp_path / "support"),
                "--out",
                str(tmp_path / "s.npz"),
                "--delegate",
                "cpu",
                *flag,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=str(tmp_path),
        )
        assert p.returncode == 0, p.stderr
        out[bool(flag)] = p.stderr
    assert "XNNPACK" not in out[False] and "INFO" not in out[False], out[False]
    assert "interpreter: INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in out[True], out[
        True
    ]
    assert "backbone.tflite: " in out[True] and "XNNPACK delegate (whole graph" in out[True], out[
        True
    ]
