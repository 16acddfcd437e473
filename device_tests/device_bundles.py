"""Bundles and few-shot tasks for the device tests (runs on the workstation side, like the fixtures).

- :func:`shipped_bundles`: ``models/glyphs`` and ``models/omniglot`` when the repo has them;
  :func:`shipped_colour_bundle`: ``models/emoji``, the RGB one.
- :func:`build_tiny_bundle`: until then (or in addition), a tiny int8 Conv4 bundle (16 filters,
  16-d embedding, untrained: the device tests check the *runtime*, not accuracy) written with
  ``metalite.export.bundle.write_bundle``. It needs TensorFlow, so it runs in a subprocess
  (``python device_tests/device_bundles.py tiny OUT``) and the pytest process never imports TF.
- :func:`make_task`: a 20-way task from the Omniglot fixture (``tests/data/omniglot``), written both as
  ``support/<label>/*.png`` + ``query/<label>/*.png`` (for the CLI and for Pillow) and as one
  ``task.npz`` of raw uint8 arrays (for the arm64 device, whose rootfs has numpy but no Pillow);
  :func:`make_colour_task`: the same layout for a cross-artist task from the emoji fixture (``tests/data/emoji``),
  its arrays uint8 RGB; :func:`build_tiny_bundle` with ``channels=3`` is the tiny bundle's RGB twin.
- :func:`with_edgetpu_model`: a copy of a bundle that also carries ``backbone_edgetpu.tflite``.
- :func:`resign`: recompute ``files`` checksums in a manifest (to build a bundle whose checksums
  pass but whose content is broken).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("omniglot", "omniglot-fast", "glyphs")
SHIPPED_COLOUR = "emoji"
# Real handwritten characters for the tasks: the Omniglot fixture shipped with the tests (its README.md).
OMNIGLOT_DIR = Path(os.environ.get("METALITE_OMNIGLOT_DIR") or REPO / "tests" / "data" / "omniglot")
TINY_RECIPE = {
    "kind": "conv4",
    "filters": 16,
    "embedding_dim": 16,
    "head": [16],
    "seed": 0,
    "rep": 48,
    "version": 3,
}
TASK_WAYS, TASK_SHOTS, TASK_QUERIES = 20, 5, 10
# Colour emoji for the colour task: the fixture shipped with the tests (its README.md), 10 concepts drawn by
# three artists (01 Noto, 02 Twemoji, 03 OpenMoji); taught from one artist, asked with the others' drawings.
EMOJI_DIR = REPO / "tests" / "data" / "emoji"
COLOUR_SUPPORT_ARTIST, COLOUR_QUERY_ARTISTS = "01", ("02", "03")
TINY_RGB_SIZE = 32  # the fixture's size, models/emoji's input


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def shipped_bundles() -> dict:
    """{name: path} of the bundles shipped in ``models/`` that exist now."""
    return {
        n: REPO / "models" / n for n in SHIPPED if (REPO / "models" / n / "manifest.json").is_file()
    }


def shipped_colour_bundle() -> Path | None:
    """``models/emoji`` if the repo has it."""
    path = REPO / "models" / SHIPPED_COLOUR
    return path if (path / "manifest.json").is_file() else None


def omniglot_zips() -> list:
    zips = sorted(OMNIGLOT_DIR.glob("*.zip"))
    if not zips:
        raise FileNotFoundError(
            f"no Omniglot zips in {OMNIGLOT_DIR} (the fixture of tests/data/omniglot; "
            "METALITE_OMNIGLOT_DIR overrides it)"
        )
    return zips


def _read_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def omniglot_images(n_classes: int | None, per_class: int, exclude=()):
    """Deterministic pick: the first ``n_classes`` (None: all) characters, in name order over every zip,
    that have at least ``per_class`` drawings and are not in ``exclude``.

    Returns ``(labels, images)``: ``labels[i]`` like ``"Greek.character01"``, ``images[i]`` a list of
    ``per_class`` uint8 (105, 105) arrays (255 = paper).
    """
    chars: dict = {}
    for path in omniglot_zips():
        with zipfile.ZipFile(path) as z:
            for name in sorted(z.namelist()):
                parts = name.split("/")
                if len(parts) == 4 and parts[3].endswith(".png"):
                    chars.setdefault(f"{parts[1]}.{parts[2]}", {}).setdefault(
                        parts[3], z.read(name)
                    )
    keys = [k for k in sorted(chars) if len(chars[k]) >= per_class and k not in exclude][:n_classes]
    if n_classes is not None and len(keys) < n_classes:
        raise ValueError(f"only {len(keys)} characters with {per_class} drawings in {OMNIGLOT_DIR}")
    return keys, [[_read_png(chars[k][f]) for f in sorted(chars[k])[:per_class]] for k in keys]


def make_task(
    out: Path, ways: int = TASK_WAYS, shots: int = TASK_SHOTS, queries: int = TASK_QUERIES
) -> Path:
    """Write a ``ways``-way task to ``out``: folders of PNGs and ``task.npz``; returns ``out``."""
    if (out / "task.npz").is_file():
        return out
    labels, imgs = omniglot_images(ways, shots + queries)
    return write_task(out, [(label, ims[:shots], ims[shots:]) for label, ims in zip(labels, imgs)])


def emoji_images() -> dict:
    """{concept: {artist: uint8 (H, W, 3) RGB}} of the emoji fixture (``CATEGORY/CONCEPT/CONCEPT_AA.png``)."""
    from PIL import Image

    files = sorted(EMOJI_DIR.glob("*/*/*.png"))
    if not files:
        raise FileNotFoundError(f"no emoji images in {EMOJI_DIR} (the fixture of tests/data/emoji)")
    out: dict = {}
    for f in files:
        with Image.open(f) as im:
            out.setdefault(f.parent.name, {})[f.stem.rsplit("_", 1)[1]] = np.asarray(
                im.convert("RGB"), np.uint8
            )
    return out


def make_colour_task(out: Path) -> Path:
    """Write the colour task to ``out`` like :func:`make_task`: every concept of the emoji fixture, its support
    the Noto drawing, its queries Twemoji's and OpenMoji's; returns ``out``."""
    if (out / "task.npz").is_file():
        return out
    classes = [
        (concept, [by[COLOUR_SUPPORT_ARTIST]], [by[a] for a in COLOUR_QUERY_ARTISTS])
        for concept, by in sorted(emoji_images().items())
    ]
    return write_task(out, classes)


def write_task(out: Path, classes) -> Path:
    """Write ``[(label, support images, query images)]`` to ``out`` (replaced): ``support/<label>/NN.png``,
    ``query/<label>/NN.png`` and ``task.npz`` holding the same uint8 arrays; returns ``out``."""
    from PIL import Image

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    sx, sy, qx, qy, qpaths = [], [], [], [], []
    for label, support, query in classes:
        for split, chunk in (("support", support), ("query", query)):
            d = tmp / split / label
            d.mkdir(parents=True)
            for i, a in enumerate(chunk):
                Image.fromarray(a).save(d / f"{i:02d}.png")
                if split == "support":
                    sx.append(a), sy.append(label)
                else:
                    qx.append(a), qy.append(label), qpaths.append(f"query/{label}/{i:02d}.png")
    np.savez(
        tmp / "task.npz",
        support_images=np.stack(sx),
        support_labels=np.array(sy),
        query_images=np.stack(qx),
        query_labels=np.array(qy),
        query_paths=np.array(qpaths),
    )
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return out


def build_tiny_bundle(out: Path, channels: int = 1) -> Path:
    """Build the tiny test bundle at ``out`` in a TensorFlow subprocess (cached: skipped if present); with
    ``channels=3`` an RGB one of the fixture's size, calibrated on the emoji fixture."""
    if (out / "manifest.json").is_file():
        return out
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "tiny" if channels == 1 else "tiny-rgb",
        str(out),
    ]
    p = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""),
    )
    if p.returncode != 0 or not (out / "manifest.json").is_file():
        tail = "\n".join(p.stdout.splitlines()[-30:])
        raise RuntimeError(
            "building the tiny test bundle failed; it needs the workstation install "
            f"(pip install '{REPO}[train]') and export/bundle.py:\n{tail}"
        )
    return out


def _tiny_main(out: Path, channels: int = 1) -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from metalite.export.bundle import write_bundle
    from metalite.export.tfcompat import keras, tf  # noqa: F401  (sets up tf_keras)
    from metalite.runtime.head import HeadSpec
    from metalite.runtime.preprocess import to_model_input
    from metalite.tools.progress import ConsoleProgress
    from metalite.training.models import build_backbone

    r = TINY_RECIPE
    tf.random.set_seed(r["seed"])
    np.random.seed(r["seed"])
    cfg = {"kind": r["kind"], "filters": r["filters"], "embedding_dim": r["embedding_dim"]}
    if channels == 1:
        model = build_backbone(cfg)
        # Representative images: Omniglot characters *not* used by the test task.
        task_chars, _ = omniglot_images(TASK_WAYS, TASK_SHOTS + TASK_QUERIES)
        _, imgs = omniglot_images(r["rep"] // 2, 2, exclude=task_chars)
        rep = to_model_input(np.stack([a for ims in imgs for a in ims]), (28, 28))
    else:
        size = (TINY_RGB_SIZE, TINY_RGB_SIZE)
        model = build_backbone(cfg, input_shape=(*size, 3))
        # The fixture has no emoji beside the task's: every drawing calibrates (the bundle is untrained anyway).
        rep = to_model_input(
            np.stack([a for by in emoji_images().values() for a in by.values()]), size, channels=3
        )
    rng = np.random.default_rng(r["seed"])
    d, h = r["embedding_dim"], r["head"][0]
    # Untrained embeddings are small; scale the (linear) hidden layer so that squared distances
    # between images are a few units and the head's probabilities are far from uniform.
    e = np.asarray(model(rep, training=False))
    dist = np.sqrt(((e[:, None] - e[None]) ** 2).sum(-1))
    gain = 2.0 / float(np.median(dist[np.triu_indices(len(e), 1)]))
    w0 = (gain * (np.eye(d, h) + 0.1 * rng.standard_normal((d, h)))).astype(np.float32)
    spec = HeadSpec(
        [(w0, np.zeros(h, np.float32))],
        ["linear"],
        {"steps": 10, "lr": 0.1, "scale": 1.0, "adapt": "head"},
    )
    meta = {
        "training": {"algorithm": "none (untrained test bundle)", "data": "omniglot"},
        "compression": {},
        "accuracy": {},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bundle(out, model, spec, rep, meta=meta, progress=ConsoleProgress(), overwrite=True)


def resign(bundle: Path) -> None:
    """Recompute size and sha256 of every file listed in ``bundle``'s manifest."""
    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text())
    for name in m["files"]:
        p = bundle / name
        m["files"][name] = {"sha256": sha256(p), "bytes": p.stat().st_size}
    mpath.write_text(json.dumps(m, indent=2))


def with_edgetpu_model(src: Path, dst: Path) -> Path:
    """Copy bundle ``src`` to ``dst`` adding ``backbone_edgetpu.tflite`` (listed with its checksum).

    The "compiled" model is a copy of ``backbone.tflite`` (batch 1 is its default shape): the runtime
    only gets as far as loading ``libedgetpu``, which is absent here, then falls back to or refuses
    the CPU. Nothing else is faked.
    """
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    shutil.copy2(dst / "backbone.tflite", dst / "backbone_edgetpu.tflite")
    m = json.loads((dst / "manifest.json").read_text())
    m["backbone"]["edgetpu_file"] = "backbone_edgetpu.tflite"
    m["files"]["backbone_edgetpu.tflite"] = {}
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    resign(dst)
    return dst


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("tiny", "tiny-rgb"):
        _tiny_main(Path(sys.argv[2]), 1 if sys.argv[1] == "tiny" else 3)
    else:
        sys.exit("usage: python device_tests/device_bundles.py tiny|tiny-rgb OUT_DIR")
