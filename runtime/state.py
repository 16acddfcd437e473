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

Saving (``atomic_write``) behaves like a careful database: it follows symlinks and replaces the file
they point to (the link stays a link), refuses to replace anything but a regular file (device node,
FIFO, directory), keeps the replaced file's mode (and owner, as root) and refuses a read-only one; a new
file gets 0666 minus the umask, like any file. It writes ``.<name>.<random>.tmp`` next to the target,
holding an ``flock`` on it, fsyncs it, ``os.replace``s it over the target and fsyncs the directory: a
crash leaves the old file or the new one, never half of one. Temporaries that a crashed save left
behind (ours by name, unlocked, older than ``STALE_TEMP_AGE`` seconds) are deleted by the next save
to the same name.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalite.common.errors import one_line

from .errors import InputError, StateError
from .head import AdaptedHead, check_classifier, check_float_array, check_layers
from .labels import normalize_label, short_repr
from .npz import read_npz
from .openset import check_setting

STATE_FORMAT = "metalite-state"
STATE_FORMAT_VERSION = 2  # gray support images (or none)
COLOR_STATE_FORMAT_VERSION = 3  # RGB support images
STATE_FORMAT_VERSIONS = (1, 2, 3)  # what load_state reads
STALE_TEMP_AGE = 60.0  # seconds; a live save holds its temporary's lock, this only covers its first instant
_TEMP_TOKEN = re.compile(r"[A-Za-z0-9_]{8,32}")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


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


def fsync_dir(directory: Path) -> None:
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


def _lock(fd: int) -> bool:
    """Take an exclusive non-blocking flock on ``fd``; False if another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; stale temporaries are then recognised by age alone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def remove_stale_temps(directory, name: str, min_age: float = STALE_TEMP_AGE) -> list:
    """Delete the temporaries of crashed saves to ``directory/name``; return the names removed.

    Only files named like ours (``.<name>.<token>.tmp``), regular, older than ``min_age`` seconds and
    not locked (a save in progress holds an flock on its temporary until it is renamed) are removed.
    """
    prefix, removed, now = f".{name}.", [], time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for ent in entries:
        n = ent.name
        if not (n.startswith(prefix) and n.endswith(".tmp") and _TEMP_TOKEN.fullmatch(n[len(prefix):-4])):
            continue
        try:
            st = ent.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            fd = os.open(ent.path, os.O_RDONLY | _O_NOFOLLOW)
        except OSError:
            continue
        try:
            if _lock(fd):
                os.unlink(ent.path)
                removed.append(n)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


def _save_target(path: Path):
    """``(file to replace, its stat or None)``: symlinks followed; anything but a regular file refused."""
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "special file")
        raise StateError(f"{path}: is a {kind}, not a regular file; refusing to replace it")
    if not os.access(target, os.W_OK):
        raise PermissionError(errno.EACCES, "the file is read-only; refusing to replace it", str(path))
    return target, st


def atomic_write(path, write) -> None:
    """Write a file atomically, through symlinks, keeping the replaced file's mode (module docstring).

    Args:
      path: target path (its directory must exist).
      write: function taking an open binary file object and writing the content.
    Raises:
      StateError: ``path`` is (or links to) a directory, device, FIFO or socket.
      OSError: the directory is missing or not writable, the disk is full, the target is read-only.
    """
    target, old = _save_target(Path(path))
    directory = target.parent
    remove_stale_temps(directory, target.name)
    tmp = directory / f".{target.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW, 0o666 if old is None else 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            _lock(f.fileno())  # held until the rename: a concurrent save's cleanup leaves this file alone
            if old is not None:
                os.chmod(tmp, stat.S_IMODE(old.st_mode))
                if getattr(os, "geteuid", lambda: -1)() == 0:
                    try:
                        os.chown(tmp, old.st_uid, old.st_gid)
                    except OSError:  # e.g. a filesystem without owners
                        pass
            write(f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


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
            raise StateError(f"cannot save label {short_repr(c)} ({type(c).__name__}): labels must be str or int")
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
            raise StateError(f"support images must be uint8 (n, H, W) or (n, H, W, 3) with n = "
                             f"{len(arrays['support'])} support rows, got {images.dtype} {images.shape}")
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
    except OSError as e:
        raise OSError(e.errno, f"cannot save state to {path}: {e.strerror or e}", str(path)) from None


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
    if meta.get("format_version") not in STATE_FORMAT_VERSIONS or isinstance(meta.get("format_version"), bool):
        raise StateError(f"{p}: state format_version {short_repr(meta.get('format_version'), 20)} is not supported "
                         f"(this runtime reads {', '.join(map(str, STATE_FORMAT_VERSIONS))})")
    return meta


def _check_classes(classes) -> list:
    """Labels from the file: a non-empty list of unique str/int labels; ValueError otherwise."""
    if not isinstance(classes, list) or not classes:
        raise ValueError("'classes' must be a non-empty list of labels")
    for c in classes:
        if type(c) not in (str, int):
            raise ValueError(f"label {short_repr(c, 40)} is a {type(c).__name__}; labels are str or int")
    if len(set(classes)) != len(classes):
        raise ValueError("'classes' has duplicate labels")
    return [normalize_label(c) for c in classes]


def _check_support(arrays: dict, n_classes: int):
    """(support float32 (n, D), support_labels int64 (n,)) with every class present; ValueError otherwise."""
    support = check_float_array(arrays.get("support"), "support", 2)
    labels = arrays.get("support_labels")
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != (len(support),):
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
    weights = check_layers([(arrays[f"W{i}"], arrays[f"b{i}"]) for i in range(n_layers)], acts, in_dim)
    last = weights[-1][0].shape[1] if weights else in_dim
    return AdaptedHead(weights, list(acts), check_classifier(arrays["clf_W"], arrays["clf_b"], last, n_classes))


def load_state(path, bundle_manifest_sha256: str | None = None, embedding_dim: int | None = None) -> State:
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
        raise StateError(f"{p}: not a readable metalite state file, truncated or corrupt ({one_line(e)[:160]})") from None
    meta = _read_meta(p, arrays)
    if _arrays_digest(arrays) != meta.get("arrays_sha256"):
        raise StateError(f"{p}: checksum mismatch; the state file is corrupt")
    want = bundle_manifest_sha256
    have = meta.get("bundle_manifest_sha256")
    if want is not None and have != want:
        raise StateError(f"{p}: adapted with a different bundle (manifest sha256 {str(have)[:12]}…, "
                         f"this bundle {want[:12]}…); adapt again with this bundle")
    try:
        classes = _check_classes(meta.get("classes"))
        support, labels = _check_support(arrays, len(classes))
        head = _check_head(meta, arrays, support.shape[1], len(classes))
        adaptation = meta.get("adaptation") or {}
        if not isinstance(adaptation, dict):
            raise ValueError("'adaptation' must be an object")
        images = arrays.get("images")
        if images is not None and not _images_ok(images, len(support)):
            raise ValueError(f"support images {images.dtype} {images.shape} for {len(support)} support rows")
        unknown = check_setting(meta.get("unknown"))
    except (ValueError, InputError) as e:
        raise StateError(f"{p}: inconsistent state file ({e})") from None
    if embedding_dim is not None and support.shape[1] != embedding_dim:
        raise StateError(f"{p}: embeddings have size {support.shape[1]}, the bundle's backbone gives {embedding_dim}")
    return State(str(have), classes, support, labels, head, dict(adaptation), images, unknown)
