"""One test per defect class of the device side (hostile images, bundles, state files, CLI input), on the
shipped bundle.

Images (alpha, 16-bit, out-of-range values, the decoding budget, per-image CLI errors), bundles (zip
extraction, malformed manifests, numbers in head.npz), state files (numbers and shapes, saving through
symlinks / onto special files / keeping the mode, stale temporaries), labels, and scale (memory of
adaptation, error messages at many classes). The property-based versions are in test_properties.py.
"""

from __future__ import annotations

import enum
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from runtime_kit import REPO, SIZE, assert_one_line, bar_image, bars, copy_bundle, rehash

from metalite.common.files import STALE_TEMP_AGE, remove_stale_temps
from metalite.runtime import (
    BundleError,
    FewShotClassifier,
    InputError,
    StateError,
    UnknownClassError,
)
from metalite.runtime import head as headlib
from metalite.runtime.images import as_model_input, read_image
from metalite.runtime.state import load_state

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

SHAPE = (SIZE, SIZE, 1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return copy_bundle(tmp_path_factory.mktemp("hardening") / "bundle")


@pytest.fixture(scope="module")
def clf(bundle):
    sup, lab = bars(4, per_class=2)
    return FewShotClassifier(bundle, delegate="cpu").fit(sup, lab)


@pytest.fixture(scope="module")
def state(clf, tmp_path_factory):
    path = tmp_path_factory.mktemp("state") / "state.npz"
    clf.save(path)
    return path


def _run(code: str, *args, timeout=120) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    )
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- images
def test_alpha_is_composited_onto_the_paper(tmp_path):
    """Black ink on a transparent background reads as that ink on white, as array and as every alpha file mode."""
    ink = bar_image(1)
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 3] = 255 - ink  # opaque black where the ink is, fully transparent elsewhere
    ref = as_model_input(ink, SHAPE)
    assert ref.sum() > 50
    np.testing.assert_allclose(as_model_input(rgba, SHAPE), ref, atol=1e-6)
    np.testing.assert_allclose(as_model_input(rgba.astype(np.float32) / 255, SHAPE), ref, atol=1e-6)
    im = Image.fromarray(rgba, "RGBA")
    for mode in ("RGBA", "LA"):
        path = tmp_path / f"{mode}.png"
        im.convert(mode).save(path)
        np.testing.assert_allclose(as_model_input(path, SHAPE), ref, atol=1e-6, err_msg=mode)
    gif = tmp_path / "t.gif"
    blank = Image.new("P", (SIZE, SIZE), 0)
    blank.putpalette([0, 0, 0] * 256)
    blank.save(gif, transparency=0)  # every pixel is palette entry 0: black, but transparent
    np.testing.assert_array_equal(as_model_input(gif, SHAPE), np.zeros((1, *SHAPE), np.float32))


def test_16bit_data_is_scaled_not_clipped(tmp_path):
    ink = np.minimum(
        bar_image(2), np.linspace(40, 255, SIZE).astype(np.uint8)[None]
    )  # a bar on a gray ramp
    ref = as_model_input(ink, SHAPE)
    wide = ink.astype(np.uint16) * 257
    np.testing.assert_allclose(as_model_input(wide, SHAPE), ref, atol=1e-6)
    path = tmp_path / "g16.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode.startswith("I;16")
    assert read_image(path).dtype == np.uint16
    np.testing.assert_allclose(as_model_input(path, SHAPE), ref, atol=1e-6)
    rgba16 = np.zeros((SIZE, SIZE, 4), np.uint16)
    rgba16[..., 3] = 65535 - wide
    np.testing.assert_allclose(as_model_input(rgba16, SHAPE), ref, atol=1e-6)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.full((5, 5), 300, np.int32), "int32 pixel values span [300, 300]"),
        (np.full((5, 5), -3, np.int8), "expected 0..255"),
        (np.full((5, 5), -1.0), "float pixel values span"),
        (np.full((5, 5), 1e30, np.float32), "float pixel values span"),
        (np.full((5, 5), np.inf), "NaN or infinite"),
        (np.zeros((5, 5), np.complex64), "unsupported dtype complex64"),
        (np.zeros((5, 5), "datetime64[s]"), "unsupported dtype"),
    ],
)
def test_out_of_range_pixels_are_refused(array, words):
    with pytest.raises(InputError) as info:
        as_model_input(array, SHAPE)
    assert_one_line(info.value, InputError)
    assert words in str(info.value)


def _blank_png(path: Path, width: int, height: int) -> None:
    """A white gray PNG of any size written row by row (13000 x 13000 is ~190 KB, made in about a second)."""
    comp, row = zlib.compressobj(9), b"\x00" + b"\xff" * width
    with open(path, "wb") as f:

        def chunk(kind: bytes, data: bytes):
            f.write(
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data))
            )

        f.write(b"\x89PNG\r\n\x1a\n")
        chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        parts = [comp.compress(row) for _ in range(height)]
        chunk(b"IDAT", b"".join(parts) + comp.flush())
        chunk(b"IEND", b"")


def test_decoding_budget_refuses_from_the_header(tmp_path):
    """A 13000 x 13000 PNG (~190 KB) is refused in one line, before decoding: the process stays small."""
    path = tmp_path / "huge.png"
    _blank_png(path, 13000, 13000)
    assert path.stat().st_size < 400_000
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large pytest process
    # (TensorFlow loaded by earlier tests) would report its parent's size.
    code = (
        "import sys\n"
        "from metalite.runtime.images import as_model_input\n"
        "from metalite.runtime import InputError\n"
        "try:\n"
        "    as_model_input(sys.argv[1], (28, 28, 1)); print('decoded')\n"
        "except InputError as e:\n"
        "    print('refused', e)\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print('peak_kib', hwm.split()[1])\n"
    )
    r = _run(code, path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert (
        lines[0].startswith("refused")
        and "13000x13000" in lines[0]
        and "decoding budget" in lines[0]
    ), r.stdout
    assert "DecompressionBomb" not in r.stderr
    peak_mib = int(lines[-1].split()[1]) / 1024
    assert peak_mib < 150, f"peak RSS {peak_mib:.0f} MiB while refusing a 13000x13000 PNG"


def test_decoding_budget_is_configurable_and_checked_before_load(tmp_path, monkeypatch):
    from PIL import ImageFile

    path = tmp_path / "a.png"
    Image.fromarray(np.full((200, 300), 255, np.uint8)).save(path)
    loads = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1) or real(self))
    monkeypatch.setenv("METALITE_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(
        InputError, match=r"300x200 image \(60,000 pixels\) exceeds the decoding budget of 50,000"
    ) as info:
        read_image(path)
    assert_one_line(info.value, InputError)
    assert not loads  # refused from the header alone
    monkeypatch.setenv("METALITE_MAX_IMAGE_PIXELS", "60000")
    assert read_image(path).shape == (200, 300) and loads


def test_jpeg_is_decoded_at_reduced_size(tmp_path):
    rng = np.random.default_rng(0)
    big = np.kron(np.where(rng.random((40, 30)) < 0.3, 0, 255), np.ones((100, 100))).astype(
        np.uint8
    )  # 4000x3000
    path = tmp_path / "photo.jpg"
    Image.fromarray(big).save(path, quality=95)
    small = read_image(path, min_size=(112, 112))
    assert small.shape[0] >= 112 and small.shape[1] >= 112 and small.shape[0] * 4 <= big.shape[0]
    full = as_model_input(big, SHAPE)
    assert float(np.abs(as_model_input(path, SHAPE) - full).max()) < 0.05


def _cli():
    import click

    from metalite.tools.cli_runtime import register

    @click.group()
    def group():
        pass

    register(group)
    return group


def test_predict_reports_each_image(bundle, state, tmp_path):
    from click.testing import CliRunner

    good = []
    for k in (3, 0):
        good.append(tmp_path / f"q{k}.png")
        Image.fromarray(bar_image(k)).save(good[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    huge = tmp_path / "huge.png"
    _blank_png(huge, 5000, 4000)
    images = [good[0], broken, tmp_path / "missing.png", huge, tmp_path, good[1]]
    runner = CliRunner()
    r = runner.invoke(
        _cli(),
        ["predict", str(bundle), "--state", str(state), "--delegate", "cpu", *map(str, images)],
    )
    assert r.exit_code == 1, r.output
    out = r.stdout.strip().splitlines()
    assert [l.split("\t")[:2] for l in out] == [[str(good[0]), "bar3"], [str(good[1]), "bar0"]]
    err = r.stderr.strip().splitlines()
    assert len(err) == 5 and err[-1] == "Error: 4 of 6 images could not be classified", err
    assert (
        "broken.png: cannot decode image" in err[0] and "missing.png: no such image file" in err[1]
    )
    assert "exceeds the decoding budget" in err[2] and "not a regular file" in err[3]
    r = runner.invoke(
        _cli(),
        [
            "predict",
            str(bundle),
            "--state",
            str(state),
            "--delegate",
            "cpu",
            "--json",
            *map(str, images),
        ],
    )
    assert r.exit_code == 1
    rows = json.loads(r.stdout)  # strict JSON: no NaN
    assert [row["image"] for row in rows] == list(map(str, images))
    assert [row["label"] for row in rows] == ["bar3", None, None, None, None, "bar0"]
    assert [row["error"] is None for row in rows] == [True, False, False, False, False, True]
    assert all(0 < row["confidence"] <= 1 for row in rows if row["error"] is None)


def test_device_predict_reports_each_image(bundle, tmp_path):
    """``metalite device predict`` (fleet device home) too: per-image errors, the others classified."""
    import shutil

    from click.testing import CliRunner

    from metalite.runtime.sync import DeviceHome
    from metalite.tools.cli_device import device_group

    home = DeviceHome(tmp_path / "home")
    staging = home.staging(1)
    shutil.copytree(bundle, staging, dirs_exist_ok=True)
    home.install(staging, 1, "test")
    sup, lab = bars(3)
    clf = home.classifier(delegate="cpu").fit(sup, lab)
    home.save(clf)
    home.close()
    good = tmp_path / "q1.png"
    Image.fromarray(bar_image(1)).save(good)
    (tmp_path / "bad.png").write_bytes(b"GIF89a nope")
    args = [
        "predict",
        str(good),
        str(tmp_path / "bad.png"),
        str(tmp_path / "missing.png"),
        "--home",
        str(tmp_path / "home"),
        "--delegate",
        "cpu",
    ]
    r = CliRunner().invoke(device_group, args + ["--json"])
    assert r.exit_code == 1, r.output
    rows = json.loads(r.stdout)
    assert [row["label"] for row in rows] == ["bar1", None, None]
    assert "cannot decode image" in rows[1]["error"] and "no such image file" in rows[2]["error"]
    assert "2 of 3 images could not be classified" in r.stderr


# ----------------------------------------------------------------------------- bundles
def _zip(bdir: Path, zpath: Path, extra: dict | None = None, replace: dict | None = None) -> Path:
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(bdir.iterdir()):
            z.writestr(f"b/{p.name}", (replace or {}).get(p.name, p.read_bytes()))
        for name, data in (extra or {}).items():
            z.writestr(f"b/{name}", data)
    return zpath


def test_zip_unpacks_only_listed_files_within_their_sizes(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("METALITE_CACHE", str(tmp_path / "cache"))
    zpath = _zip(
        bundle, tmp_path / "extra.zip", extra={"junk.bin": b"\0" * (50 << 20), "notes.txt": b"hi"}
    )
    assert zpath.stat().st_size < (1 << 20)
    c = FewShotClassifier(zpath, delegate="cpu")
    listed = set(json.loads((bundle / "manifest.json").read_text())["files"]) | {"manifest.json"}
    assert {p.name for p in c.bundle.root.iterdir()} == listed
    # a listed member that is bigger inside the zip than the manifest records
    big_head = (bundle / "head.npz").read_bytes() + b"\0" * 1000
    bad = _zip(bundle, tmp_path / "bigger.zip", replace={"head.npz": big_head})
    with pytest.raises(BundleError, match=r"head\.npz: \d+ bytes in .*records") as info:
        FewShotClassifier(bad, delegate="cpu")
    assert_one_line(info.value, BundleError)
    # a manifest that records absurd sizes for a zip bomb
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["head.npz"]["bytes"] = 1 << 40
    bomb = _zip(bundle, tmp_path / "bomb.zip", replace={"manifest.json": json.dumps(m).encode()})
    with pytest.raises(BundleError, match="would expand to more than") as info:
        FewShotClassifier(bomb, delegate="cpu")
    missing = _zip(bundle, tmp_path / "missing.zip", replace={})
    with zipfile.ZipFile(missing) as z:
        kept = {n: z.read(n) for n in z.namelist() if not n.endswith("head.npz")}
    with zipfile.ZipFile(missing, "w") as z:
        for n, data in kept.items():
            z.writestr(n, data)
    with pytest.raises(BundleError, match=r"head\.npz: listed in manifest\.json but missing from"):
        FewShotClassifier(missing, delegate="cpu")
    assert not [
        p for p in (tmp_path / "cache" / "bundles").iterdir() if p.name.startswith(".extract-")
    ]


MANIFEST_EDITS = [
    ("input is a string", lambda m: m.update(input="28x28"), "field 'input' must be an object"),
    (
        "files is a list",
        lambda m: m.update(files=["backbone.tflite"]),
        "field 'files' has the wrong type",
    ),
    (
        "bytes is a string",
        lambda m: m["files"]["head.npz"].update(bytes="many"),
        "bytes must be an integer",
    ),
    (
        "sha256 is a number",
        lambda m: m["files"]["head.npz"].update(sha256=12),
        "has no valid sha256",
    ),
    (
        "file name with a path",
        lambda m: m["files"].update({"../x": m["files"]["head.npz"]}),
        "unsafe or invalid",
    ),
    (
        "backbone.file is a number",
        lambda m: m["backbone"].update(file=5),
        "backbone.file must be a file name",
    ),
    ("head.file is null", lambda m: m["head"].update(file=None), "head.file must be a file name"),
    (
        "preprocess is a list",
        lambda m: m["input"].update(preprocess=[1, 2]),
        "preprocess must be an object",
    ),
    (
        "range reversed",
        lambda m: m["input"]["preprocess"].update(range=[1.0, 0.0]),
        "finite lo < hi",
    ),
    (
        "range NaN",
        lambda m: m["input"]["preprocess"].update(range=[float("nan"), 1.0]),
        "finite lo < hi",
    ),
    (
        "invert is a string",
        lambda m: m["input"]["preprocess"].update(invert="yes"),
        "invert must be true or false",
    ),
    (
        "scale NaN",
        lambda m: m["input"]["quantization"].update(scale=float("nan")),
        "scale must be a finite number",
    ),
    (
        "scale infinite",
        lambda m: m["output"]["quantization"].update(scale=float("inf")),
        "scale must be a finite",
    ),
    (
        "zero_point huge",
        lambda m: m["input"]["quantization"].update(zero_point=1e300),
        "zero_point must be an integer",
    ),
    ("shape has a float", lambda m: m["input"].update(shape=[28, 28.0, 1]), "input.shape must be"),
    ("shape has a bool", lambda m: m["input"].update(shape=[28, True, 1]), "input.shape must be"),
    ("embedding_dim bool", lambda m: m["output"].update(embedding_dim=True), "has the wrong type"),
    (
        "format_version true",
        lambda m: m.update(format_version=True),
        "format_version True is not supported",
    ),
]


@pytest.mark.parametrize("what, edit, words", MANIFEST_EDITS, ids=[e[0] for e in MANIFEST_EDITS])
def test_malformed_manifest_is_one_bundle_error(bundle, tmp_path, what, edit, words):
    d = copy_bundle(tmp_path / "b")
    m = json.loads((d / "manifest.json").read_text())
    edit(m)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError) as info:
        FewShotClassifier(d, delegate="cpu")
    assert_one_line(info.value, BundleError)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        " " * (2 << 20) + "{}",
        "\udcff",
        "null",
    ],
)
def test_absurd_manifest_text_is_one_bundle_error(tmp_path, text):
    d = copy_bundle(tmp_path / "b")
    (d / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(BundleError) as info:
        FewShotClassifier(d, delegate="cpu")
    assert_one_line(info.value, BundleError)


def _write_head(bdir: Path, arrays: dict) -> None:
    with open(bdir / "head.npz", "wb") as f:
        np.savez(f, **arrays)
    rehash(bdir)


def _head_arrays(bdir: Path) -> dict:
    with np.load(bdir / "head.npz") as z:
        return {k: z[k] for k in z.files}


def _with_config(arrays: dict, **adaptation) -> dict:
    cfg = json.loads(str(arrays["config"]))
    cfg["adaptation"].update(adaptation)
    return {**arrays, "config": np.array(json.dumps(cfg))}


HEAD_EDITS = [
    (
        "NaN weight",
        lambda a: {**a, "W0": np.where(np.eye(64, dtype=bool), np.nan, a["W0"]).astype(np.float32)},
        "W0 has NaN, infinite or huge values",
    ),
    (
        "huge weight",
        lambda a: {**a, "b0": np.full(64, 1e30, np.float32)},
        "b0 has NaN, infinite or huge",
    ),
    (
        "negative steps",
        lambda a: _with_config(a, steps=-1),
        "steps must be an integer in [0, 1000]",
    ),
    (
        "enormous steps",
        lambda a: _with_config(a, steps=10**9),
        "steps must be an integer in [0, 1000]",
    ),
    ("float steps", lambda a: _with_config(a, steps=2.5), "steps must be an integer"),
    ("NaN lr", lambda a: _with_config(a, lr=float("nan")), "adaptation.lr must be a number"),
    ("string lr", lambda a: _with_config(a, lr="0.1"), "adaptation.lr must be a number"),
    ("zero scale", lambda a: _with_config(a, scale=0), "adaptation.scale must be a number in (0"),
    (
        "unknown adapt",
        lambda a: _with_config(a, adapt="backbone"),
        "adaptation.adapt must be one of",
    ),
    (
        "W0 wrong width",
        lambda a: {**a, "W0": np.zeros((64, 32), np.float32)},
        "b0 has shape (64,), W0 gives 32",
    ),
    (
        "W0 wrong input",
        lambda a: {**a, "W0": np.zeros((32, 64), np.float32)},
        "first layer takes 32 inputs",
    ),
    (
        "int weights",
        lambda a: {**a, "W0": np.zeros((64, 64), np.int32)},
        "W0 must be a 2-d float array",
    ),
    (
        "object array",
        lambda a: {**a, "W0": np.array([None, 1], dtype=object)},
        "not a readable .npz",
    ),
    (
        "no config",
        lambda a: {k: v for k, v in a.items() if k != "config"},
        "no JSON 'config' entry",
    ),
    (
        "deep config",
        lambda a: {**a, "config": np.array("[" * 100_000 + "]" * 100_000)},
        "not valid JSON",
    ),
    ("layers missing", lambda a: {k: v for k, v in a.items() if k != "b0"}, "b0 is missing"),
]


@pytest.mark.parametrize("what, edit, words", HEAD_EDITS, ids=[e[0] for e in HEAD_EDITS])
def test_bad_numbers_in_head_are_one_bundle_error(bundle, tmp_path, what, edit, words):
    d = copy_bundle(tmp_path / "b")
    _write_head(d, edit(_head_arrays(d)))
    with pytest.raises(BundleError) as info:
        FewShotClassifier(d, delegate="cpu")
    assert_one_line(info.value, BundleError)
    assert words in str(info.value) and "head.npz" in str(info.value), str(info.value)


def test_head_zip_bomb_is_refused_before_decompression(tmp_path):
    d = copy_bundle(tmp_path / "b")
    arrays = _head_arrays(d)
    with open(d / "head.npz", "wb") as f:
        np.savez_compressed(f, **arrays, big=np.zeros(64 << 20, np.uint8))
    rehash(d)
    with pytest.raises(BundleError, match="would expand to"):
        FewShotClassifier(d, delegate="cpu")


def test_diverging_adaptation_is_an_input_error(tmp_path):
    d = copy_bundle(tmp_path / "b")
    _write_head(d, _with_config(_head_arrays(d), steps=50, lr=1e6))
    c = FewShotClassifier(d, delegate="cpu")
    sup, lab = bars(3)
    with pytest.raises(InputError, match="diverged") as info:
        c.fit(sup, lab)
    assert_one_line(info.value, InputError)
    assert c.head is None and c.classes == []


# ----------------------------------------------------------------------------- state files
def _state_arrays(path: Path):
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays.pop("meta")))


def _write_state(path: Path, arrays: dict, meta: dict, rehash_arrays: bool = True) -> None:
    from metalite.runtime.state import _arrays_digest

    if rehash_arrays:
        meta = {**meta, "arrays_sha256": _arrays_digest(arrays)}
    with open(path, "wb") as f:
        np.savez(f, **arrays, meta=np.array(json.dumps(meta)))


STATE_EDITS = [
    ("NaN classifier", lambda a, m: ({**a, "clf_W": a["clf_W"] * np.nan}, m), "clf_W has NaN"),
    (
        "huge bias",
        lambda a, m: ({**a, "clf_b": a["clf_b"] + 1e30}, m),
        "clf_b has NaN, infinite or huge",
    ),
    ("NaN support", lambda a, m: ({**a, "support": a["support"] * np.nan}, m), "support has NaN"),
    (
        "head does not chain",
        lambda a, m: ({**a, "clf_W": np.zeros((32, 4), np.float32)}, m),
        "classifier shapes",
    ),
    (
        "hidden layer wrong",
        lambda a, m: ({**a, "W0": np.zeros((64, 32), np.float32)}, m),
        "b0 has shape",
    ),
    (
        "label out of range",
        lambda a, m: ({**a, "support_labels": a["support_labels"] + 3}, m),
        "must lie in [0, 4)",
    ),
    (
        "class without rows",
        lambda a, m: ({**a, "support_labels": a["support_labels"] % 3}, m),
        "no support embeddings",
    ),
    (
        "float label",
        lambda a, m: (a, {**m, "classes": [1.5, "a", "b", "c"]}),
        "label 1.5 is a float",
    ),
    (
        "bool label",
        lambda a, m: (a, {**m, "classes": [True, "a", "b", "c"]}),
        "label True is a bool",
    ),
    (
        "duplicate labels",
        lambda a, m: (a, {**m, "classes": ["a", "a", "b", "c"]}),
        "duplicate labels",
    ),
    (
        "classes a dict",
        lambda a, m: (a, {**m, "classes": {"a": 1}}),
        "'classes' must be a non-empty list",
    ),
    (
        "n_layers mismatch",
        lambda a, m: (a, {**m, "n_layers": 2}),
        "do not describe the same layers",
    ),
    ("unknown activation", lambda a, m: (a, {**m, "activations": ["gelu"]}), "unknown activation"),
    (
        "adaptation a list",
        lambda a, m: (a, {**m, "adaptation": [1]}),
        "'adaptation' must be an object",
    ),
    (
        "format_version 99",
        lambda a, m: (a, {**m, "format_version": 99}),
        "format_version 99 is not supported",
    ),
    ("meta not JSON", None, "corrupt metadata"),
]


@pytest.mark.parametrize("what, edit, words", STATE_EDITS, ids=[e[0] for e in STATE_EDITS])
def test_bad_state_contents_are_one_state_error(bundle, state, tmp_path, what, edit, words):
    arrays, meta = _state_arrays(state)
    path = tmp_path / "bad.npz"
    if edit is None:
        with open(path, "wb") as f:
            np.savez(f, **arrays, meta=np.array("{" * 60_000))
    else:
        _write_state(path, *edit(arrays, meta))
    with pytest.raises(StateError) as info:
        FewShotClassifier.load(bundle, path, delegate="cpu")
    assert_one_line(info.value, StateError)
    assert words in str(info.value), str(info.value)


def test_overflowing_head_never_yields_nan(clf):
    """Defence in depth: a head whose scores overflow is an InputError at predict, never NaN probabilities."""
    head = clf.head
    try:
        w, b = head.classifier
        clf.head = headlib.AdaptedHead(
            [(np.full_like(head.weights[0][0], 1e12), head.weights[0][1])],
            head.activations,
            (np.full_like(w, 1e30), b),
        )
        with pytest.raises(InputError, match="non-finite scores") as info:
            clf.predict_proba(bar_image(0))
        assert_one_line(info.value, InputError)
        with pytest.raises(InputError, match="non-finite scores"):
            clf.predict(bar_image(0))
        res = clf.predict_proba_each([bar_image(0)])
        assert isinstance(res[0], InputError)
    finally:
        clf.head = head


def test_save_writes_through_symlinks_and_keeps_the_mode(clf, tmp_path):
    real = tmp_path / "real" / "state.npz"
    real.parent.mkdir()
    clf.save(real)
    os.chmod(real, 0o640)
    link = tmp_path / "current.npz"
    link.symlink_to(os.path.relpath(real, tmp_path))
    chain = tmp_path / "chain.npz"
    chain.symlink_to(link)
    before = real.stat().st_ino
    clf.save(chain)
    assert (
        chain.is_symlink()
        and link.is_symlink()
        and os.readlink(link) == os.path.relpath(real, tmp_path)
    )
    assert real.stat().st_ino != before  # replaced (atomically), not rewritten in place
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert load_state(link).classes == clf.classes
    assert sorted(p.name for p in real.parent.iterdir()) == [
        "state.npz"
    ]  # the temporary was next to the target
    # a dangling link gets its target created
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "real" / "new.npz")
    clf.save(dangling)
    assert (tmp_path / "real" / "new.npz").is_file() and dangling.is_symlink()
    # a new file gets the umask's mode, like any file
    old = os.umask(0o027)
    try:
        clf.save(tmp_path / "fresh.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh.npz").stat().st_mode) == 0o640


def test_save_refuses_special_files(clf, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "adir").mkdir()
    null_link = tmp_path / "null.npz"
    null_link.symlink_to("/dev/null")
    for target, kind in [
        (fifo, "FIFO"),
        (tmp_path / "adir", "directory"),
        (null_link, "character device"),
        (Path("/dev/null"), "character device"),
    ]:
        with pytest.raises(StateError, match=f"is a {kind}, not a regular file") as info:
            clf.save(target)
        assert_one_line(info.value, StateError)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert null_link.is_symlink()
    readonly = tmp_path / "ro.npz"
    clf.save(readonly)
    os.chmod(readonly, 0o444)
    if os.geteuid() == 0:  # root may write anything: the mode is kept
        clf.save(readonly)
        assert stat.S_IMODE(readonly.stat().st_mode) == 0o444
    else:
        with pytest.raises(PermissionError, match="read-only"):
            clf.save(readonly)


HOLD_LOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""

CRASH_MID_SAVE = """
import os, sys, time
from metalite.common.files import atomic_write
def write(f):
    f.write(b"half of a state")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
atomic_write(sys.argv[1], write)
"""


def test_crashed_saves_leave_no_temporaries_behind(clf, tmp_path):
    target = tmp_path / "state.npz"
    clf.save(target)
    good = target.read_bytes()
    # a save killed in the middle (power cut): its temporary stays, the old state is intact
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    p = subprocess.Popen(
        [sys.executable, "-c", CRASH_MID_SAVE, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGKILL)
    p.wait()
    crashed = [q for q in tmp_path.iterdir() if q.name.startswith(".state.npz.")]
    assert len(crashed) == 1 and target.read_bytes() == good
    # more leftovers: two crashed ones of old (ours), a live save's (locked), and files that are not ours
    old = time.time() - 2 * STALE_TEMP_AGE
    names = {
        "stale": ".state.npz.abcdefgh.tmp",
        "locked": ".state.npz.0123456789abcdef.tmp",
        "fresh": ".state.npz.qwertyui.tmp",
        "other": ".other.npz.abcdefgh.tmp",
        "odd": ".state.npz.a-b.tmp",
    }
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x" * 1000)
        if key != "fresh":
            os.utime(tmp_path / name, (old, old))
    os.utime(crashed[0], (old, old))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(tmp_path / names["locked"])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        clf.save(target)
    finally:
        holder.kill()
        holder.wait()
    left = sorted(q.name for q in tmp_path.iterdir())
    assert left == sorted(
        ["state.npz", names["locked"], names["fresh"], names["other"], names["odd"]]
    ), left
    assert remove_stale_temps(tmp_path, "state.npz") == [names["locked"]]  # its holder is gone now
    assert load_state(target).classes == clf.classes


# ----------------------------------------------------------------------------- labels
class Color(enum.IntEnum):
    RED = 7


@pytest.mark.parametrize(
    "label, words",
    [
        (None, "label None is a NoneType"),
        (1.5, "label 1.5 is a float"),
        ((1, 2), "is a tuple"),
        (b"x", "is a bytes"),
        (True, "label True is a bool"),
        (np.float32(2), "is a float"),
        (np.bool_(False), "label False is a bool"),
        (frozenset(), "is a frozenset"),
    ],
)
def test_labels_other_than_str_and_int_are_refused_at_fit(bundle, label, words):
    c = FewShotClassifier(bundle, delegate="cpu")
    sup, lab = bars(2)
    c.fit(sup, lab)
    before = c.classes
    for call in (
        lambda: c.fit(sup, [label, "other"]),
        lambda: c.add_class(label, sup[:1]),
        lambda: c.fit({label: sup[:1], "b": sup[1:]}),
        lambda: c.remove_class(label),
    ):
        with pytest.raises(InputError, match="labels must be str or int") as info:
            call()
        assert_one_line(info.value, InputError)
        assert words in str(info.value)
    assert c.classes == before


def test_label_normalisation(bundle, tmp_path):
    c = FewShotClassifier(bundle, delegate="cpu")
    sup, _ = bars(3)
    c.fit(sup, [np.int64(4), Color.RED, np.str_("x")])
    assert c.classes == [4, 7, "x"] and [type(k) for k in c.classes] == [int, int, str]
    c.add_class(np.uint8(4), sup[:1])  # the same class as 4
    assert c.classes == [4, 7, "x"]
    c.add_class("4", sup[1:2])  # a different class: str and int never collide
    assert c.classes == [4, 7, "x", "4"]
    c.save(tmp_path / "s.npz")
    assert FewShotClassifier.load(bundle, tmp_path / "s.npz", delegate="cpu").classes == [
        4,
        7,
        "x",
        "4",
    ]


# ----------------------------------------------------------------------------- scale
def _adapt_peak(n_classes: int, steps: int, dim: int = 16) -> tuple:
    rng = np.random.default_rng(0)
    spec = headlib.HeadSpec(
        [(np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32))],
        ["linear"],
        {"steps": steps, "lr": 0.1, "scale": 1.0, "adapt": "head"},
    )
    emb = rng.standard_normal((n_classes, dim)).astype(np.float32)
    tracemalloc.start()
    try:
        head = headlib.adapt(spec, emb, np.arange(n_classes), n_classes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return head, peak


def test_adaptation_memory_is_linear_in_classes(monkeypatch):
    """3000 one-shot classes: the old one-hot (n x C) and softmax matrices alone were 2 x 36 MB."""
    monkeypatch.setattr(headlib, "ROW_BLOCK_ELEMENTS", 1 << 18)  # blocks of 87 rows here
    n = 3000
    linear = 4 * (n * 16 * 12)  # a dozen (n, d) float32 arrays
    block = 4 * 4 * headlib.ROW_BLOCK_ELEMENTS  # a few row blocks of logits
    for steps in (0, 3):
        _, peak = _adapt_peak(n, steps)
        assert peak < linear + block, f"steps={steps}: peak {peak / 2**20:.1f} MiB"
        assert peak < 4 * n * n  # less than one (n, C) float32 matrix


def test_blocked_adaptation_equals_the_full_batch_formula(monkeypatch):
    full, _ = _adapt_peak(300, 4)
    monkeypatch.setattr(headlib, "ROW_BLOCK_ELEMENTS", 1000)  # 3 rows per block
    blocked, _ = _adapt_peak(300, 4)
    for a, b in zip(
        [*full.classifier, *full.weights[0]], [*blocked.classifier, *blocked.weights[0]]
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_errors_at_many_classes_stay_short(bundle):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(1500, SIZE, SIZE), dtype=np.uint8)
    c = FewShotClassifier(bundle, delegate="cpu").fit(imgs, [f"class-{i:05d}" for i in range(1500)])
    with pytest.raises(UnknownClassError) as info:
        c.remove_class("nope")
    assert_one_line(info.value, UnknownClassError)
    assert len(str(info.value)) < 200 and "1500 classes" in str(info.value)
    with pytest.raises(InputError) as info:
        c.add_class("x" * 100_000, np.full((SIZE, SIZE), np.nan))
    assert len(str(info.value)) < 300
