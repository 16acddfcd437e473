"""Save and load the adapted state of a ``FewShotClassifier`` as a versioned .npz, atomically.

File contents (all arrays; no pickle):

- ``meta``: 0-d unicode JSON ``{"format": "metalite-state", "format_version": 2,
  "bundle_manifest_sha256", "embedding_dim", "classes": [labels in column order], "activations",
  "n_layers", "adaptation": {...used settings}, "images": bool, "arrays_sha256", "created"}``
- ``support``: float32 (n, D) support embeddings, grouped by class in column order;
  ``support_labels``: int64 (n,) column index of each row (so add/remove_class refit without images)
- ``W{i}``, ``b{i}``: the adapted hidden layers; ``clf_W`` (d, C), ``clf_b`` (C,): the classifier.
- ``images`` (version 2, when every support image is known): uint8 (n, H, W) gray pixels (255 = paper)
  of the support images at the bundle's input size, row i belonging to ``support[i]``. They let another
  backbone re-embed the classes (``metalite.runtime.sync``); 28x28 images cost 784 bytes each.

Version 1 files (no ``images``, no ``meta.images``) still load, with ``images`` None.

``arrays_sha256`` is the sha256 over every array's name, dtype, shape and bytes, so a corrupt file is
refused even where the zip CRC would pass. Saving writes a temporary file in the target's directory,
fsyncs it, ``os.replace``s it over the target and fsyncs the directory: a crash leaves the old file or
the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import StateError, one_line
from .head import AdaptedHead

STATE_FORMAT = "metalite-state"
STATE_FORMAT_VERSION = 2
STATE_FORMAT_VERSIONS = (1, 2)  # what load_state reads


@dataclass
class State:
    """What a classifier needs to predict and to refit without images.

    Attributes:
      bundle_manifest_sha256: sha256 of the bundle's manifest.json.
      classes: labels (str or int) in column order.
      support: float32 (n, D) support embeddings; support_labels: int64 (n,) column indices.
      head: the ``AdaptedHead``.
      adaptation: the adaptation settings used (for information).
      images: uint8 (n, H, W) support images in ``support`` row order, or None when not all are known.
    """

    bundle_manifest_sha256: str
    classes: list
    support: np.ndarray
    support_labels: np.ndarray
    head: AdaptedHead
    adaptation: dict
    images: np.ndarray | None = None


def _arrays_digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(str(directory), os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """Write a file atomically.

    Args:
      path: target path (its directory must exist).
      write: function taking an open binary file object and writing the content.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def save_state(path, state: State) -> None:
    """Write ``state`` to ``path`` (exact name; no suffix is added) atomically.

    Raises:
      StateError: a label is not a str or int.
      OSError: the directory does not exist or is not writable.
    """
    for c in state.classes:
        if not isinstance(c, (str, int)) or isinstance(c, bool):
            raise StateError(f"cannot save label {c!r} ({type(c).__name__}): labels must be str or int")
    head = state.head
    arrays = {
        "support": np.asarray(state.support, np.float32),
        "support_labels": np.asarray(state.support_labels, np.int64),
        "clf_W": np.asarray(head.classifier[0], np.float32),
        "clf_b": np.asarray(head.classifier[1], np.float32),
    }
    for i, (w, b) in enumerate(head.weights):
        arrays[f"W{i}"] = np.asarray(w, np.float32)
        arrays[f"b{i}"] = np.asarray(b, np.float32)
    if state.images is not None:
        images = np.asarray(state.images)
        if images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(arrays["support"]):
            raise StateError(f"support images must be uint8 (n, H, W) with n = {len(arrays['support'])} "
                             f"support rows, got {images.dtype} {images.shape}")
        arrays["images"] = images
    meta = {
        "format": STATE_FORMAT,
        "format_version": STATE_FORMAT_VERSION,
        "bundle_manifest_sha256": state.bundle_manifest_sha256,
        "embedding_dim": int(arrays["support"].shape[1]),
        "classes": list(state.classes),
        "activations": list(head.activations),
        "n_layers": len(head.weights),
        "adaptation": dict(state.adaptation),
        "images": state.images is not None,
        "arrays_sha256": _arrays_digest(arrays),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    # Serialise in memory first: a failing disk write then cannot leave numpy's zip writer half-open.
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write(path, lambda f: f.write(buf.getbuffer()))
    except OSError as e:
        raise OSError(e.errno, f"cannot save state to {path}: {e.strerror or e}", str(path)) from None


def load_state(path, bundle_manifest_sha256: str | None = None, embedding_dim: int | None = None) -> State:
    """Read a state file written by ``save_state`` and check it.

    Args:
      path: the state file.
      bundle_manifest_sha256: if given, the state must have been adapted with this bundle.
      embedding_dim: if given, the stored embeddings must have this size.
    Returns:
      A ``State``.
    Raises:
      StateError: missing, truncated/corrupt, unknown format/version, or made for another bundle.
    """
    p = Path(path)
    if not p.is_file():
        raise StateError(f"{p}: no such state file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise StateError(f"{p}: not a readable metalite state file, truncated or corrupt ({one_line(e)})") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except KeyError:
        raise StateError(f"{p}: not a metalite state file (no 'meta' entry)") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise StateError(f"{p}: corrupt metadata ({one_line(e)})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise StateError(f"{p}: not a metalite state file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("format_version") not in STATE_FORMAT_VERSIONS:
        raise StateError(f"{p}: state format_version {meta.get('format_version')!r} is not supported "
                         f"(this runtime reads {', '.join(map(str, STATE_FORMAT_VERSIONS))})")
    if _arrays_digest(arrays) != meta.get("arrays_sha256"):
        raise StateError(f"{p}: checksum mismatch; the state file is corrupt")
    want = bundle_manifest_sha256
    have = meta.get("bundle_manifest_sha256")
    if want is not None and have != want:
        raise StateError(f"{p}: adapted with a different bundle (manifest sha256 {str(have)[:12]}…, "
                         f"this bundle {want[:12]}…); adapt again with this bundle")
    try:
        n_layers = int(meta["n_layers"])
        classes = list(meta["classes"])
        weights = [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(n_layers)]
        head = AdaptedHead(weights, list(meta["activations"]), (arrays["clf_W"], arrays["clf_b"]))
        support, labels = arrays["support"], arrays["support_labels"]
    except (KeyError, TypeError, ValueError) as e:
        raise StateError(f"{p}: incomplete state file ({one_line(e)})") from None
    dim = support.shape[1] if support.ndim == 2 else None
    if (support.ndim != 2 or labels.shape != (len(support),) or head.classifier[0].shape[1:] != (len(classes),)
            or (len(labels) and (labels.min() < 0 or labels.max() >= len(classes)))):
        raise StateError(f"{p}: inconsistent state file (array shapes do not match {len(classes)} classes)")
    if embedding_dim is not None and dim != embedding_dim:
        raise StateError(f"{p}: embeddings have size {dim}, the bundle's backbone gives {embedding_dim}")
    images = arrays.get("images")
    if images is not None and (images.dtype != np.uint8 or images.ndim != 3 or len(images) != len(support)):
        raise StateError(f"{p}: inconsistent state file (support images {images.dtype} {images.shape} "
                         f"for {len(support)} support rows)")
    return State(have, classes, support.astype(np.float32), labels.astype(np.int64), head,
                 dict(meta.get("adaptation") or {}), images)
