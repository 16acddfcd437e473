"""Helpers for the runtime hardening tests: the shipped bundle (no TensorFlow needed), manifest edits,
ink images, a saved state and the one-line error check."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from metalite.runtime import MetaliteError
from metalite.runtime.bundle import sha256_file

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "omniglot"
SIZE = 28


def copy_bundle(dst: Path) -> Path:
    """A private copy of the shipped bundle (manifest, backbone.tflite, head.npz and the rest)."""
    shutil.copytree(SHIPPED, dst)
    return dst


def rehash(bdir: Path, manifest: dict | None = None) -> None:
    """Write ``manifest`` (or the current one) with fresh sha256/bytes of every listed file that exists."""
    m = manifest if manifest is not None else json.loads((bdir / "manifest.json").read_text())
    for name in list(m.get("files", {})):
        if (bdir / name).is_file():
            m["files"][name] = {"sha256": sha256_file(bdir / name), "bytes": (bdir / name).stat().st_size}
    (bdir / "manifest.json").write_text(json.dumps(m, indent=1))


def bar_image(k: int, size: int = SIZE) -> np.ndarray:
    """uint8 (size, size) paper-white image with a black horizontal bar at height ``k`` (0..3)."""
    img = np.full((size, size), 255, np.uint8)
    top = 2 + 6 * (k % 4) * size // SIZE
    img[top:top + 4 * size // SIZE, 3 * size // SIZE:25 * size // SIZE] = 0
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
