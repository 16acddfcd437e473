"""Helpers of the runtime tests: the shipped bundle (no TensorFlow needed), manifest edits, synthetic ink
images (bars, shapes), device homes and old state files, and the one-line error check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from repo_paths import REPO

from metalite.runtime import MetaliteError
from metalite.runtime import state as statelib
from metalite.runtime.bundle import sha256_file
from metalite.runtime.sync import DeviceHome

SHIPPED = REPO / "models" / "omniglot"
SIZE = 28
N_SHAPES = 8


def copy_bundle(dst: Path) -> Path:
    """A private copy of the shipped bundle (manifest, backbone.tflite, head.npz and the rest)."""
    shutil.copytree(SHIPPED, dst)
    return dst


def rehash(bdir: Path, manifest: dict | None = None) -> None:
    """Write ``manifest`` (or the current one) with fresh sha256/bytes of every listed file that exists."""
    m = manifest if manifest is not None else json.loads((bdir / "manifest.json").read_text())
    for name in list(m.get("files", {})):
        if (bdir / name).is_file():
            m["files"][name] = {
                "sha256": sha256_file(bdir / name),
                "bytes": (bdir / name).stat().st_size,
            }
    (bdir / "manifest.json").write_text(json.dumps(m, indent=1))


def bar_image(k: int, size: int = SIZE) -> np.ndarray:
    """uint8 (size, size) paper-white image with a black horizontal bar at height ``k`` (0..3)."""
    img = np.full((size, size), 255, np.uint8)
    top = 2 + 6 * (k % 4) * size // SIZE
    img[top : top + 4 * size // SIZE, 3 * size // SIZE : 25 * size // SIZE] = 0
    return img


def bars(n: int, per_class: int = 1):
    """(uint8 images (n*per_class, 28, 28), labels "bar{k}") of ``n`` bar heights (n <= 4)."""
    imgs = [bar_image(k) for k in range(n) for _ in range(per_class)]
    return np.stack(imgs), [f"bar{k}" for k in range(n) for _ in range(per_class)]


def assert_one_line(exc: BaseException, kind=MetaliteError) -> None:
    """A deliberate runtime error: the expected type, a MetaliteError, one non-empty line of sane length."""
    assert isinstance(exc, kind) and isinstance(exc, MetaliteError), repr(exc)
    msg = str(exc)
    assert msg and "\n" not in msg and len(msg) < 1000, msg


def shape_image(kind: int, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """uint8 (size, size) image, paper 255, with ink shape ``kind`` (0..7), shifted by up to 2 px, noisy."""
    img = np.full((size, size), 255, np.uint8)
    dy, dx = rng.integers(-2, 3, size=2)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = size // 2 + dy, size // 2 + dx
    k = kind % N_SHAPES
    if k == 0:
        m = (abs(yy - cy) <= 6) & (abs(xx - cx) <= 6)
    elif k == 1:
        m = abs(yy - cy) <= 2
    elif k == 2:
        m = abs(xx - cx) <= 2
    elif k == 3:
        r = np.hypot(yy - cy, xx - cx)
        m = (r >= 6) & (r <= 9)
    elif k == 4:
        m = abs((yy - cy) - (xx - cx)) <= 2
    elif k == 5:
        m = (abs(yy - cy) <= 1) | (abs(xx - cx) <= 1)
    elif k == 6:
        m = (yy > cy) & (xx < cx)
    else:
        m = (yy // 4 + xx // 4) % 2 == 0
    img[m] = 0
    noise = rng.integers(0, 30, size=img.shape)
    return np.clip(img.astype(int) + np.where(img == 0, noise, -noise), 0, 255).astype(np.uint8)


def shapes(kinds, per_class: int, seed: int):
    """(images uint8 (n, 28, 28), labels list of "shape{k}") with ``per_class`` images of each kind."""
    rng = np.random.default_rng(seed)
    imgs = np.stack([shape_image(k, rng) for k in kinds for _ in range(per_class)])
    return imgs, [f"shape{k}" for k in kinds for _ in range(per_class)]


def rewrite_manifest(bdir: Path, edit) -> None:
    """Apply ``edit(manifest)`` and refresh the checksums of every listed file (a test helper, not a writer)."""
    m = json.loads((bdir / "manifest.json").read_text())
    edit(m)
    for name in m["files"]:
        m["files"][name] = {
            "sha256": sha256_file(bdir / name),
            "bytes": (bdir / name).stat().st_size,
        }
    (bdir / "manifest.json").write_text(json.dumps(m, indent=2))


def installed_home(path: Path, bundle: Path, version: int = 1) -> DeviceHome:
    """A device home running ``bundle`` as ``version`` (as a sync would leave it)."""
    home = DeviceHome(path)
    shutil.copytree(bundle, home.versions / str(version))
    (home.root / "current.json").write_text(json.dumps({"version": version}))
    return home


def write_v1_state(clf, path) -> None:
    """Save ``clf``'s state as metalite 0.1 did: state format 1, no support images."""
    emb = clf.support_embeddings()
    lab = np.concatenate([np.full(len(v), i) for i, v in enumerate(emb.values())])
    old = statelib.STATE_FORMAT_VERSION
    statelib.STATE_FORMAT_VERSION = 1
    try:
        statelib.save_state(
            path,
            statelib.State(
                clf.bundle.manifest_sha256,
                clf.classes,
                np.concatenate(list(emb.values())),
                lab,
                clf.head,
                {},
            ),
        )
    finally:
        statelib.STATE_FORMAT_VERSION = old
