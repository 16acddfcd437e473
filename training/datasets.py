"""Few-shot datasets behind one ``--data`` spec: ``glyphs`` (built in), ``omniglot:PATH[,PATH]``, ``folder:PATH``.

``load_data(spec, image_size, split)`` returns a ``FewShotData``: uint8 images (paper = 255, ink = 0)
at the model's size, a class index per image, class names and a group per class (Omniglot's alphabet,
the glyph's script) for alphabet-aware splits and within-alphabet episodes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalite.runtime.preprocess import resize_area

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
SPLITS = ("train", "val", "test", "all")
CACHE_VERSION = 1


class DataError(ValueError):
    """Bad data spec or unusable images; the message names the path and the problem."""


@dataclass
class FewShotData:
    """Images grouped into classes. ``images`` (N, H, W) uint8, ``labels`` (N,) class index."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list
    groups: list
    spec: str = ""

    def __post_init__(self):
        order = np.argsort(self.labels, kind="stable")
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._index = [order[s:s + c] for s, c in zip(starts, counts)]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def indices_of(self, c: int) -> np.ndarray:
        """Image indices of class ``c``."""
        return self._index[c]

    def counts(self) -> np.ndarray:
        return np.array([len(i) for i in self._index])

    def inputs(self) -> np.ndarray:
        """All images as float32 model input (N, H, W, 1), ink = 1 (docs/DESIGN.md, "Images")."""
        return (1.0 - self.images.astype(np.float32) / 255.0)[..., None]

    def subset(self, classes) -> "FewShotData":
        """A FewShotData with only ``classes`` (indices), relabelled 0..len-1."""
        classes = list(classes)
        idx = np.concatenate([self._index[c] for c in classes]) if classes else np.zeros(0, int)
        remap = np.full(self.num_classes, -1)
        remap[classes] = np.arange(len(classes))
        return FewShotData(self.images[idx], remap[self.labels[idx]],
                           [self.class_names[c] for c in classes], [self.groups[c] for c in classes], self.spec)


def _cache_dir() -> Path:
    return Path(os.environ.get("METALITE_CACHE", Path.home() / ".cache" / "metalite")) / "data"


def _decode(raw: bytes, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as im:
            return np.asarray(im.convert("L"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{where}: not a readable image ({e})") from None


def _to_size(gray: np.ndarray, size: int) -> np.ndarray:
    return np.clip(np.rint(resize_area(gray, (size, size))), 0, 255).astype(np.uint8)


def _collect(items, size: int, where: str):
    """items: iterable of (group, class_name, path_for_errors, raw bytes) -> FewShotData parts."""
    names, groups, images, labels, index = [], [], [], [], {}
    for group, cname, path, raw in items:
        key = (group, cname)
        if key not in index:
            index[key] = len(names)
            names.append(f"{group}/{cname}" if group else cname)
            groups.append(group)
        if not raw:
            raise DataError(f"{path}: empty image file")
        images.append(_to_size(_decode(raw, path), size))
        labels.append(index[key])
    if not images:
        raise DataError(f"{where}: no images found (expected class_name/*.png|jpg folders)")
    return np.stack(images), np.array(labels), names, groups


def _omniglot_items(path: Path):
    """(alphabet, character, path, bytes) for every image of an Omniglot folder or zip."""
    if path.suffix.lower() == ".zip":
        try:
            zf = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DataError(f"{path}: not a valid zip file") from None
        with zf:
            for name in sorted(zf.namelist()):
                parts = name.rstrip("/").split("/")
                if name.lower().endswith(IMAGE_SUFFIXES) and len(parts) >= 3 and not parts[-1].startswith("."):
                    yield parts[-3], parts[-2], f"{path}:{name}", zf.read(name)
    else:
        for f in sorted(path.rglob("*")):
            rel = f.relative_to(path).parts
            if f.suffix.lower() in IMAGE_SUFFIXES and len(rel) >= 3:
                yield rel[-3], rel[-2], str(f), f.read_bytes()


def _folder_items(path: Path):
    for d in sorted(p for p in path.iterdir() if p.is_dir()):
        files = [f for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise DataError(f"{d}: class folder has no images (.png/.jpg)")
        for f in files:
            yield "", d.name, str(f), f.read_bytes()


def _fingerprint(paths) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _load_cached(kind: str, paths, size: int, items_fn) -> FewShotData:
    key = f"{kind}-{_fingerprint(paths)}-{size}-v{CACHE_VERSION}"
    cache = _cache_dir() / f"{key}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return FewShotData(z["images"], z["labels"], meta["names"], meta["groups"])
        except Exception:
            pass  # a damaged cache is rebuilt
    parts = []
    for p in paths:
        parts.append(_collect(items_fn(p), size, str(p)))
    offset, imgs, labs, names, groups = 0, [], [], [], []
    for im, lab, nm, gr in parts:
        imgs.append(im)
        labs.append(lab + offset)
        names += nm
        groups += gr
        offset += len(nm)
    data = FewShotData(np.concatenate(imgs), np.concatenate(labs), names, groups)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, images=data.images, labels=data.labels,
             meta=np.array(json.dumps({"names": names, "groups": groups})))
    os.replace(tmp, cache)
    return data


def rotate_classes(data: FewShotData) -> FewShotData:
    """Add 90/180/270-degree rotations of every class as new classes (Omniglot practice, Santoro et al. 2016)."""
    imgs, labs, names, groups = [data.images], [data.labels], list(data.class_names), list(data.groups)
    for k in (1, 2, 3):
        imgs.append(np.rot90(data.images, k, axes=(1, 2)))
        labs.append(data.labels + k * data.num_classes)
        names += [f"{n}@rot{90 * k}" for n in data.class_names]
        groups += [f"{g}@rot{90 * k}" for g in data.groups]
    return FewShotData(np.ascontiguousarray(np.concatenate(imgs)), np.concatenate(labs), names, groups, data.spec)


def _split_classes(data: FewShotData, split: str, seed: int = 0, with_test: bool = True) -> list:
    """Deterministic class split. Grouped data (alphabets) is split by whole groups, so held-out
    alphabets are never seen in training; ungrouped data by class. With ``with_test`` (the built-in
    glyphs) 70/15/15 train/val/test; without (Omniglot, folders: the user brings a separate test set)
    85/15 train/val and ``test`` is the same held-out classes as ``val``."""
    if split == "all":
        return list(range(data.num_classes))
    base = [g.split("@rot")[0] for g in data.groups]
    if len(set(base)) < 3:
        base = [n.split("@rot")[0] for n in data.class_names]
    units = list(np.random.default_rng(seed).permutation(sorted(set(base))))
    n = len(units)
    n_val = max(1, int(round(0.15 * n)))
    n_test = max(1, int(round(0.15 * n))) if with_test else 0
    if n - n_val - n_test < 1:
        raise DataError(f"{data.spec or 'data'}: too few classes/groups ({n}) to split off held-out classes")
    if not with_test and split == "test":
        split = "val"
    chosen = set({"val": units[:n_val], "test": units[n_val:n_val + n_test], "train": units[n_val + n_test:]}[split])
    return [c for c in range(data.num_classes) if base[c] in chosen]


def parse_spec(spec: str):
    """'glyphs' | 'omniglot:P1[,P2]' | 'folder:P' -> (kind, [Path, ...]); raises DataError."""
    spec = (spec or "").strip()
    if spec == "glyphs":
        return "glyphs", []
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("omniglot", "folder") or not rest:
        raise DataError(f"unknown data spec {spec!r}; use glyphs, omniglot:PATH[,PATH] or folder:PATH")
    paths = [Path(p).expanduser() for p in rest.split(",") if p]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
        if kind == "folder" and not p.is_dir():
            raise DataError(f"{p}: folder: expects a directory of class_name/ folders")
    return kind, paths


def load_data(spec: str, image_size: int = 28, split: str = "all", rotations: bool = False,
              seed: int = 0, progress: bool = True) -> FewShotData:
    """Load a dataset spec at ``image_size`` and keep the classes of ``split`` (train/val/test/all).

    Rotations (omniglot) are added after splitting, so a rotated copy never crosses a split.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    kind, paths = parse_spec(spec)
    if kind == "glyphs":
        from .glyphs import load_glyphs

        imgs, names, groups = load_glyphs(image_size=image_size, progress=progress)
        c, s = imgs.shape[:2]
        data = FewShotData(imgs.reshape(c * s, image_size, image_size), np.repeat(np.arange(c), s),
                           list(names), list(groups))
    elif kind == "omniglot":
        data = _load_cached("omniglot", paths, image_size, _omniglot_items)
    else:
        data = _load_cached("folder", paths, image_size, _folder_items)
    data.spec = spec
    data = data.subset(_split_classes(data, split, seed, with_test=(kind == "glyphs")))
    if rotations:
        data = rotate_classes(data)
    if data.num_classes == 0:
        raise DataError(f"{spec}: split {split!r} has no classes")
    return data
