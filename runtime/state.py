"""Save and load the adapted state of a ``FewShotClassifier`` as a versioned .npz, atomically.

File contents (all arrays; no pickle):

- ``meta``: 0-d unicode JSON ``{"format": "metalite-state", "format_version": 2 (3 with colour images),
  "bundle_manifest_sha256", "embedding_dim", "classes": [labels in column order], "activations",
  "n_layers", "adaptation": {...used settings}, "images": bool, "arrays_sha256", "created"}``
- ``support``: float32 (n, D) support embeddings, grouped by class in column order;
  ``support_labels``: int64 (n,) column index of each row (so add/remove_class refit without images)
- ``W{i}``, ``b{i}``: the adapted hidden layers; ``clf_W`` (d, C), ``clf_b`` (C,): the classifier.
- ``images`` (version 2, when every support image is known): uint8 (n, H, W) gray pixels (255 = paper)
  of the support images at the bundle's input size, row i belonging to ``support[i]``. They let another
  backbone re-embed the classes (``metalite.runtime.sync``); 28x28 images cost 784 bytes each.
- ``images`` (version 3): uint8 (n, H, W, 3) RGB pixels on the white background, from an RGB bundle. Only
  the shape differs from version 2; the new number makes an older runtime refuse the file in one line
  instead of calling it inconsistent. Gray states are still written as version 2.

Version 1 files (no ``images``, no ``meta.images``) and version 2 files still load (``images`` None for 1).

``meta.unknown`` (optional, any version): the open-set setting ``{"rate", "threshold", "rule", "samples"}``
(``metalite.runtime.openset``); absent when open-set answers are off, and in files from before it existed.

``arrays_sha256`` is the sha256 over every array's name, dtype, shape and bytes, so a corrupt file is
refused even where the zip CRC would pass; every number is then checked (``load_state``): labels str or
int and unique, support rows finite and each class with at least one, head shapes chaining from the
embedding to the classes, weights finite and bounded.

Saving goes through ``metalite.common.files.atomic_write``: it follows symlinks and replaces the file they
point to, refuses to replace anything but a regular file (a ``StateError`` here) or a read-only one, keeps
the replaced file's mode and owner, and a crash leaves the old file or the new one, never half of one;
temporaries of crashed saves are removed by the next save to the same name.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalite.common.errors import FileRefusedError, one_line
from metalite.common.files import atomic_write

from .errors import InputError, StateError
from .head import AdaptedHead, check_classifier, check_float_array, check_layers
from .labels import normalize_label, short_repr
from .npz import read_npz
from .openset import check_setting

STATE_FORMAT = "metalite-state"
STATE_FORMAT_VERSION = 2  # gray support images (or none)
COLOR_STATE_FORMAT_VERSION = 3  # RGB support images
STATE_FORMAT_VERSIONS = (1, 2, 3)  # what load_state reads


@dataclass
class State:
    """What a classifier needs to predict and to refit without images.

    Attributes:
      bundle_manifest_sha256: sha256 of the bundle's manifest.json.
      classes: labels (str or int) in column order.
      support: float32 (n, D) support embeddings; support_labels: int64 (n,) column indices.
      head: the ``AdaptedHead``.
      adaptation: the adaptation settings used (for information).
      images: uint8 (n, H, W) gray or (n, H, W, 3) RGB support images in ``support`` row order, or None
        when not all are known.
      unknown: the open-set setting and threshold (``openset.calibrate``), or None when off.
    """

    bundle_manifest_sha256: str
    classes: list
    support: np.ndarray
    support_labels: np.ndarray
    head: AdaptedHead
    adaptation: dict
    images: np.ndarray | None = None
    unknown: dict | None = None


def _arrays_digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _images_ok(images: np.ndarray, n: int) -> bool:
    """Support images as a state keeps them: uint8 (n, H, W) gray or (n, H, W, 3) RGB."""
    shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)
    return images.dtype == np.uint8 and shape_ok and len(images) == n


def save_state(path, state: State) -> None:
    """Write ``state`` to ``path`` (exact name; no suffix is added) atomically.

    Raises:
      StateError: a label is not a str or int; ``path`` is not a regular file (see ``atomic_write``).
      OSError: the directory does not exist or is not writable, the target is read-only, the disk is full.
    """
    for c in state.classes:
        if type(c) not in (str, int):
            raise StateError(
                f"cannot save label {short_repr(c)} ({type(c).__name__}): labels must be str or int"
            )
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
        if not _images_ok(images, len(arrays["support"])):
            raise StateError(
                f"support images must be uint8 (n, H, W) or (n, H, W, 3) with n = "
                f"{len(arrays['support'])} support rows, got {images.dtype} {images.shape}"
            )
        arrays["images"] = images
    color = "images" in arrays and arrays["images"].ndim == 4
    meta = {
        "format": STATE_FORMAT,
        "format_version": COLOR_STATE_FORMAT_VERSION if color else STATE_FORMAT_VERSION,
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
    if state.unknown is not None:
        try:
            meta["unknown"] = check_setting(state.unknown)
        except ValueError as e:
            raise StateError(f"cannot save the open-set setting: {e}") from None
    arrays["meta"] = np.array(json.dumps(meta))
    # Serialise in memory first: a failing disk write then cannot leave numpy's zip writer half-open.
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write(path, lambda f: f.write(buf.getbuffer()))
    except FileRefusedError as e:
        raise StateError(str(e)) from None
    except OSError as e:
        raise OSError(
            e.errno, f"cannot save state to {path}: {e.strerror or e}", str(path)
        ) from None


def _read_meta(p: Path, arrays: dict) -> dict:
    raw = arrays.pop("meta", None)
    if raw is None:
        raise StateError(f"{p}: not a metalite state file (no 'meta' entry)")
    try:
        if raw.dtype.kind != "U" or raw.ndim != 0:
            raise ValueError(f"a {raw.dtype} array of shape {raw.shape}, not a JSON string")
        meta = json.loads(str(raw))
    except (ValueError, RecursionError) as e:
        raise StateError(f"{p}: corrupt metadata ({one_line(e)[:120]})") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise StateError(f"{p}: not a metalite state file (format {short_repr(fmt, 40)})")
    if meta.get("format_version") not in STATE_FORMAT_VERSIONS or isinstance(
        meta.get("format_version"), bool
    ):
        raise StateError(
            f"{p}: state format_version {short_repr(meta.get('format_version'), 20)} is not supported "
            f"(this runtime reads {', '.join(map(str, STATE_FORMAT_VERSIONS))})"
        )
    return meta


def _check_classes(classes) -> list:
    """Labels from the file: a non-empty list of unique str/int labels; ValueError otherwise."""
    if not isinstance(classes, list) or not classes:
        raise ValueError("'classes' must be a non-empty list of labels")
    for c in classes:
        if type(c) not in (str, int):
            raise ValueError(
                f"label {short_repr(c, 40)} is a {type(c).__name__}; labels are str or int"
            )
    if len(set(classes)) != len(classes):
        raise ValueError("'classes' has duplicate labels")
    return [normalize_label(c) for c in classes]


def _check_support(arrays: dict, n_classes: int):
    """(support float32 (n, D), support_labels int64 (n,)) with every class present; ValueError otherwise."""
    support = check_float_array(arrays.get("support"), "support", 2)
    labels = arrays.get("support_labels")
    if (
        not isinstance(labels, np.ndarray)
        or labels.dtype.kind not in "iu"
        or labels.shape != (len(support),)
    ):
        raise ValueError(f"support_labels must be {len(support)} integers")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"support_labels must lie in [0, {n_classes})")
    if np.bincount(labels, minlength=n_classes).min() == 0:
        raise ValueError("a class has no support embeddings")
    return support, labels


def _check_head(meta: dict, arrays: dict, in_dim: int, n_classes: int) -> AdaptedHead:
    n_layers, acts = meta.get("n_layers"), meta.get("activations")
    if type(n_layers) is not int or not isinstance(acts, list) or len(acts) != n_layers:
        raise ValueError("'n_layers' and 'activations' do not describe the same layers")
    missing = [k for i in range(n_layers) for k in (f"W{i}", f"b{i}")] + ["clf_W", "clf_b"]
    missing = [k for k in missing if k not in arrays]
    if missing:
        raise ValueError(f"array {missing[0]} is missing")
    weights = check_layers(
        [(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(n_layers)], acts, in_dim
    )
    last = weights[-1][0].shape[1] if weights else in_dim
    return AdaptedHead(
        weights, list(acts), check_classifier(arrays["clf_W"], arrays["clf_b"], last, n_classes)
    )


def load_state(
    path, bundle_manifest_sha256: str | None = None, embedding_dim: int | None = None
) -> State:
    """Read a state file written by ``save_state`` and check every part of it.

    Args:
      path: the state file.
      bundle_manifest_sha256: if given, the state must have been adapted with this bundle.
      embedding_dim: if given, the stored embeddings must have this size.
    Returns:
      A ``State``.
    Raises:
      StateError: one line; missing, truncated/corrupt, unknown format/version, made for another bundle,
        or contents that do not fit together (labels, shapes, NaN or huge numbers).
    """
    p = Path(path)
    if not p.is_file():
        raise StateError(f"{p}: no such state file")
    try:
        arrays = read_npz(p)
    except (ValueError, OSError) as e:
        raise StateError(
            f"{p}: not a readable metalite state file, truncated or corrupt ({one_line(e)[:160]})"
        ) from None
    meta = _read_meta(p, arrays)
    if _arrays_digest(arrays) != meta.get("arrays_sha256"):
        raise StateError(f"{p}: checksum mismatch; the state file is corrupt")
    want = bundle_manifest_sha256
    have = meta.get("bundle_manifest_sha256")
    if want is not None and have != want:
        raise StateError(
            f"{p}: adapted with a different bundle (manifest sha256 {str(have)[:12]}…, "
            f"this bundle {want[:12]}…); adapt again with this bundle"
        )
    try:
        classes = _check_classes(meta.get("classes"))
        support, labels = _check_support(arrays, len(classes))
        head = _check_head(meta, arrays, support.shape[1], len(classes))
        adaptation = meta.get("adaptation") or {}
        if not isinstance(adaptation, dict):
            raise ValueError("'adaptation' must be an object")
        images = arrays.get("images")
        if images is not None and not _images_ok(images, len(support)):
            raise ValueError(
                f"support images {images.dtype} {images.shape} for {len(support)} support rows"
            )
        unknown = check_setting(meta.get("unknown"))
    except (ValueError, InputError) as e:
        raise StateError(f"{p}: inconsistent state file ({e})") from None
    if embedding_dim is not None and support.shape[1] != embedding_dim:
        raise StateError(
            f"{p}: embeddings have size {support.shape[1]}, the bundle's backbone gives {embedding_dim}"
        )
    return State(str(have), classes, support, labels, head, dict(adaptation), images, unknown)
