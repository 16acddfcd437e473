"""Property-based tests (Hypothesis): whatever a manifest, head.npz, state file or image holds, the runtime
either works or raises one of its own typed errors, in one line. Never a traceback from deep inside.

Example counts are bounded (``max_examples``, no deadline) so the file runs in well under a minute.
Inputs are mutations of the shipped bundle's real files (so parsing gets past the first check) mixed
with arbitrary JSON values, arrays of any dtype and shape, and random bytes.
"""

from __future__ import annotations

import copy
import io
import json
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from runtime_kit import SIZE, assert_one_line, bars, copy_bundle, rehash  # noqa: E402

from metalite.runtime import (  # noqa: E402
    BundleError,
    FewShotClassifier,
    InputError,
    MetaliteError,
    NotFittedError,
    StateError,
    UnknownClassError,
)
from metalite.runtime.bundle import open_bundle  # noqa: E402
from metalite.runtime.images import as_model_input, read_image  # noqa: E402
from metalite.runtime.state import _arrays_digest  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SHAPE = (SIZE, SIZE, 1)

# ----------------------------------------------------------------------------- strategies
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [0, 1, -1, 28, 64, 0.5, "head.npz", "backbone.tflite", "L", "area", [0.0, 1.0], [28, 28, 1]]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj, prefix=()):
    """Every key path of a JSON object tree (dict keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated(draw, base, max_edits=3):
    """``base`` (a JSON tree) with up to ``max_edits`` values replaced, removed or added at random places."""
    obj = copy.deepcopy(base)
    fresh = lambda: copy.deepcopy(draw(json_values))  # noqa: E731  (drawn lists may be shared: never edit them)
    for _ in range(draw(st.integers(1, max_edits))):
        paths = list(_paths(obj))
        depth = draw(
            st.sampled_from(sorted({len(q) for q in paths}))
        )  # shallow paths as often as deep ones
        path = draw(st.sampled_from([q for q in paths if len(q) == depth]))
        if not path:
            if draw(st.booleans()):
                obj = fresh()
            continue
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = fresh()
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = fresh()
        else:
            parent.append(fresh())
    return obj


any_dtype = st.one_of(
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(),
    hnp.unicode_string_dtypes(),
    st.just(np.dtype(object)),
    st.just(np.dtype(np.float16)),
    st.just(np.dtype(np.uint16)),
)


def any_array(max_dims=5, max_side=6):
    return hnp.arrays(
        any_dtype, hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)
    )


def float_array(max_side=70):
    """Float images of any size up to ``max_side``, values anywhere (pixel ranges, huge, NaN, infinite)."""
    special = [0.0, 0.5, 1.0, 255.0, float(np.float32(1e30))]  # exactly representable in float32
    values = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.sampled_from(special)
    return hnp.arrays(
        st.sampled_from([np.float32, np.float64]),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side),
        elements=values,
    )


def pixel_array():
    """Image-like arrays: the dtypes images come in, 2 to 4 dimensions, channel counts 1 to 5."""
    dtype = st.sampled_from(
        [np.uint8, np.uint16, np.bool_, np.float32, np.float64, np.int64, np.int8]
    )
    shape = st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
        lambda hw: st.sampled_from(
            [hw, (*hw, 1), (*hw, 3), (*hw, 4), (2, *hw), (2, *hw, 4), (*hw, 2), (*hw, 5)]
        )
    )
    return hnp.arrays(dtype, shape)


@st.composite
def near_miss(draw, a):
    """``a`` almost right: one axis a different length, transposed, another dtype, or values scaled to huge/NaN."""
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":  # e.g. the JSON config: any other text
        return np.array(draw(st.text(max_size=20)))
    how = draw(st.sampled_from(["axis", "transpose", "dtype", "values"]))
    if how == "axis" and a.ndim:
        axis = draw(st.integers(0, a.ndim - 1))
        n = max(0, a.shape[axis] + draw(st.sampled_from([-1, 1, -a.shape[axis]])))
        return np.resize(a, a.shape[:axis] + (n,) + a.shape[axis + 1 :])
    if how == "transpose":
        return a.T.copy()
    if how == "dtype":
        return a.astype(
            draw(st.sampled_from([np.float16, np.float64, np.int64, np.uint8, np.bool_]))
        )
    with np.errstate(all="ignore"):
        return (a * draw(st.sampled_from([1e30, -1e30, np.nan, np.inf, 0.0, -1.0]))).astype(a.dtype)


@st.composite
def image_files(draw):
    """Bytes of a small image in a random mode and format, sometimes truncated or with a byte flipped."""
    from PIL import Image

    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1", "I;16", "I", "F", "CMYK"]))
    fmt = draw(st.sampled_from(["PNG", "GIF", "BMP", "TIFF", "JPEG", "WEBP", "PPM"]))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    im = Image.frombytes(
        mode, (w, h), draw(st.binary(min_size=4 * w * h * 4, max_size=4 * w * h * 4))
    )
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return None
    data = bytearray(buf.getvalue())
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    return bytes(data)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A fitted classifier on a private copy of the shipped bundle, its state file and pristine contents."""
    root = tmp_path_factory.mktemp("props")
    bdir = copy_bundle(root / "bundle")
    sup, lab = bars(3, per_class=2)
    clf = FewShotClassifier(bdir, delegate="cpu").fit(sup, lab)
    clf.save(root / "state.npz")
    with np.load(root / "state.npz") as z:
        state = {k: z[k] for k in z.files}
    with np.load(bdir / "head.npz") as z:
        head = {k: z[k] for k in z.files}
    return {
        "root": root,
        "bundle": bdir,
        "clf": clf,
        "manifest": json.loads((bdir / "manifest.json").read_text()),
        "state": state,
        "head": head,
        "support": sup,
    }


def _exercise(clf, support) -> None:
    """Use a classifier that was created without error: everything it does works or is a typed error."""
    try:
        clf.fit(support[:2], ["a", "b"])
        proba = clf.predict_proba(support)
        assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(axis=1), 1, atol=1e-4)
        clf.add_class("c", support[2:3])
        clf.remove_class("a")
    except MetaliteError as e:
        assert_one_line(e)


# ----------------------------------------------------------------------------- properties
@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_any_manifest_opens_or_is_one_bundle_error(base, data):
    manifest = data.draw(mutated(base["manifest"]))
    bdir = base["root"] / "mbundle"
    if not bdir.exists():
        copy_bundle(bdir)
    text = json.dumps(manifest)  # NaN and Infinity included: Python's json reads them back
    (bdir / "manifest.json").write_text(text)
    try:
        b = open_bundle(bdir)
    except BundleError as e:
        assert_one_line(e, BundleError)
        event("BundleError")
        return
    event("opened")
    assert b.embedding_dim >= 1 and len(b.input_shape) == 3
    assert all(math.isfinite(v) for v in (*b.input_quantization, *b.output_quantization))


@st.composite
def head_contents(draw, pristine):
    arrays = dict(pristine)
    cfg = json.loads(str(arrays["config"]))
    choice = draw(
        st.sampled_from(["array", "config", "array", "both", "drop"])
    )  # Hypothesis favours the first
    if choice in ("config", "both"):
        arrays["config"] = np.array(json.dumps(draw(mutated(cfg))))
    if choice in ("array", "both"):
        name = draw(st.sampled_from(["W0", "b0", "W1", "config", "extra"]))
        arrays[name] = draw(
            st.one_of(any_array(), float_array(), near_miss(arrays.get(name, arrays["b0"])))
        )
    if choice == "drop":
        arrays.pop(draw(st.sampled_from(sorted(arrays))))
    return arrays


@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_any_head_npz_loads_or_is_one_bundle_error(base, data):
    arrays = data.draw(head_contents(base["head"]))
    bdir = base["root"] / "hbundle"
    if not bdir.exists():
        copy_bundle(bdir)
    try:
        with open(bdir / "head.npz", "wb") as f:
            np.savez(f, **arrays)
    except (
        Exception
    ):  # numpy cannot even write it (an object array that does not pickle): nothing to test
        event("unwritable")
        return
    rehash(bdir)
    try:
        clf = FewShotClassifier(bdir, delegate="cpu")
    except BundleError as e:
        assert_one_line(e, BundleError)
        event("BundleError")
        return
    event("loaded")
    _exercise(clf, base["support"])


@st.composite
def state_contents(draw, pristine):
    arrays = dict(pristine)
    meta = json.loads(str(arrays.pop("meta")))
    choice = draw(
        st.sampled_from(["array", "meta", "array", "both", "drop"])
    )  # Hypothesis favours the first
    if choice in ("meta", "both"):
        meta = draw(mutated({k: v for k, v in meta.items() if k != "arrays_sha256"}))
    if choice in ("array", "both"):
        name = draw(
            st.sampled_from(
                ["support", "support_labels", "clf_W", "clf_b", "W0", "b0", "W1", "images"]
            )
        )
        arrays[name] = draw(
            st.one_of(any_array(), float_array(), near_miss(arrays.get(name, arrays["clf_b"])))
        )
    if choice == "drop":
        arrays.pop(draw(st.sampled_from(sorted(arrays))))
    if isinstance(meta, dict) and draw(
        st.sampled_from([True] * 9 + [False])
    ):  # mostly a matching checksum
        try:
            meta["arrays_sha256"] = _arrays_digest(arrays)
        except (TypeError, ValueError):
            pass
    return arrays, meta


@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
def test_any_state_file_loads_or_is_one_state_error(base, data):
    arrays, meta = data.draw(state_contents(base["state"]))
    path = base["root"] / "prop_state.npz"
    try:
        with open(path, "wb") as f:
            np.savez(f, **arrays, meta=np.array(json.dumps(meta)))
    except Exception:  # numpy cannot even write it: nothing to test
        event("unwritable")
        return
    try:
        clf = FewShotClassifier.load(base["bundle"], path, delegate="cpu")
    except StateError as e:
        assert_one_line(e, StateError)
        event("StateError: " + str(e).split(": ", 1)[1].split(" (")[0][:40])
        return
    event("loaded")
    try:  # it loaded: predicting and refitting work (or fail in one typed line)
        proba = clf.predict_proba(base["support"])
        assert np.all(np.isfinite(proba))
        clf.add_class("new-class", base["support"][:1])
        clf.remove_class(clf.classes[0])
        clf.save(base["root"] / "resaved.npz")
    except (InputError, UnknownClassError, NotFittedError, StateError) as e:
        assert_one_line(e)


@settings(max_examples=100, **SETTINGS)
@given(
    images=st.one_of(
        any_array(),
        float_array(),
        pixel_array(),
        pixel_array(),
        st.lists(any_array(max_dims=3) | float_array() | pixel_array() | scalars, max_size=3),
        scalars,
        json_values,
    )
)
def test_any_image_input_is_model_input_or_one_input_error(images):
    try:
        x = as_model_input(images, SHAPE)
    except InputError as e:
        assert_one_line(e, InputError)
        event("InputError")
        return
    event("model input")
    assert x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == SHAPE and len(x) >= 1
    assert np.all(np.isfinite(x)) and x.min() >= 0 and x.max() <= 1


PNG = b"\x89PNG\r\n\x1a\n"


@settings(max_examples=80, **SETTINGS)
@given(
    data=st.one_of(
        image_files(),
        image_files(),
        st.binary(max_size=300).map(lambda b: PNG + b),
        st.binary(max_size=300),
    )
)
def test_any_image_file_decodes_or_is_one_input_error(tmp_path_factory, data):
    if data is None:  # Pillow cannot write that mode in that format
        event("unsavable")
        return
    path = tmp_path_factory.getbasetemp() / "prop_image.bin"
    path.write_bytes(data)
    try:
        a = read_image(path, min_size=(112, 112))
        x = as_model_input(path, SHAPE)
    except InputError as e:
        assert_one_line(e, InputError)
        event("InputError")
        return
    event("decoded")
    assert a.dtype in (np.uint8, np.uint16, np.float32) and a.ndim in (2, 3)
    assert np.all(np.isfinite(x)) and x.shape == (1, *SHAPE)
