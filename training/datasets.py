"""Few-shot datasets behind one ``--data`` spec: ``glyphs`` (built in), ``digits`` (scikit-learn's, a
cross-domain check), ``omniglot:PATH[,PATH]``, ``folder:PATH``, ``emoji:PATH``.

``load_data(spec, image_size, split)`` returns a ``FewShotData``: uint8 images (paper = 255, ink = 0)
at the model's size, a class index per image, class names and a group per class (Omniglot's alphabet,
the glyph's script, the emoji's category) for alphabet-aware splits and within-alphabet episodes.

Colour: images are gray (N, H, W) unless the data has colour, then RGB (N, H, W, 3) on a white background
(transparency composited as the device does, ``metalite.runtime.images``). ``folder:`` data is colour when
any image has a pixel whose channels differ (an RGB file of gray content stays gray); ``emoji:`` is always
colour; glyphs and Omniglot are gray. ``channels=1`` or ``3`` forces either (a gray model measured on
colour data sees the luma, as on the device).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalite.common.files import atomic_write, cache_root
from metalite.runtime.errors import InputError
from metalite.runtime.folders import class_folders
from metalite.runtime.images import IMAGE_EXTENSIONS, read_image_bytes
from metalite.runtime.plural import plural
from metalite.runtime.preprocess import resize_area, to_gray, to_rgb

from .errors import DataError

SPLITS = ("train", "val", "test", "all")
# Every measurement after training (evaluate, compress, export, bench) reports on these classes; training
# validates on "val". For folder data they are the same classes (the user brings a separate test set).
HELDOUT_SPLIT = "test"
SPLIT_NAMES = {
    "train": "training classes",
    "val": "validation classes",
    "test": "held-out test classes",
    "all": "all classes",
}
CACHE_VERSION = (
    4  # 3: colour images kept, transparency composited like the device; 4: every image extension
)
# Lake et al.'s one-shot runs take 20 characters from one alphabet: Omniglot test alphabets need as many.
LAKE_WAYS = 20
# emoji: categories never trained on (the held-out test concepts), and the least concepts a val category needs
EMOJI_TEST_GROUPS = ("Animals & Nature", "Food & Drink")
EMOJI_MIN_VAL_CONCEPTS = LAKE_WAYS
MIN_SPLIT_CLASSES = 2  # every split runs episodes of at least 2 classes


@dataclass
class FewShotData:
    """Images grouped into classes. ``images`` (N, H, W) gray or (N, H, W, 3) RGB uint8, ``labels`` (N,) class
    index, ``drawers`` (N,) who drew each image (``CCCC_DD.png``: DD, Omniglot's drawer or the emoji's
    artist), -1 where unknown."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list
    groups: list
    spec: str = ""
    drawers: np.ndarray | None = None

    def __post_init__(self):
        if self.drawers is None:
            self.drawers = np.full(len(self.labels), -1, np.int16)
        order = np.argsort(self.labels, kind="stable")
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._index = [order[s : s + c] for s, c in zip(starts, counts)]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def indices_of(self, c: int) -> np.ndarray:
        """Image indices of class ``c``."""
        return self._index[c]

    def counts(self) -> np.ndarray:
        return np.array([len(i) for i in self._index])

    @property
    def channels(self) -> int:
        """1 for gray images, 3 for RGB."""
        return 1 if self.images.ndim == 3 else int(self.images.shape[-1])

    def inputs(self) -> np.ndarray:
        """All images as float32 model input (N, H, W, C), ink = 1 (docs/DESIGN.md, "Images")."""
        x = 1.0 - self.images.astype(np.float32) / 255.0
        return x[..., None] if x.ndim == 3 else x

    def subset(self, classes) -> FewShotData:
        """A FewShotData with only ``classes`` (indices), relabelled 0..len-1."""
        classes = list(classes)
        idx = np.concatenate([self._index[c] for c in classes]) if classes else np.zeros(0, int)
        remap = np.full(self.num_classes, -1)
        remap[classes] = np.arange(len(classes))
        return FewShotData(
            self.images[idx],
            remap[self.labels[idx]],
            [self.class_names[c] for c in classes],
            [self.groups[c] for c in classes],
            self.spec,
            self.drawers[idx],
        )


def _decode(raw: bytes, where: str) -> np.ndarray:
    """Float32 pixels of an image file: (H, W) gray, or (H, W, 3) RGB with any transparency composited."""
    try:
        a = read_image_bytes(raw, where)
    except InputError as e:
        raise DataError(f"{where}: not a readable image ({e})") from None
    if a.dtype == np.uint16:
        a = a.astype(np.float32) / np.float32(257.0)
    if a.ndim == 2:
        return a.astype(np.float32)
    return to_rgb(a[None])[0]


def _to_size(pixels: np.ndarray, size: int) -> np.ndarray:
    """Gray (H, W) or RGB (H, W, 3) pixels -> uint8 at size x size, area resampled (channel by channel)."""
    if pixels.ndim == 3:
        pixels = np.moveaxis(resize_area(np.moveaxis(pixels, -1, 0), (size, size)), 0, -1)
        return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return np.clip(np.rint(resize_area(pixels, (size, size))), 0, 255).astype(np.uint8)


def _is_color(img: np.ndarray) -> bool:
    return img.ndim == 3 and bool(
        np.any(img[..., 0] != img[..., 1]) or np.any(img[..., 1] != img[..., 2])
    )


def _stack(images: list, channels: int) -> np.ndarray:
    """Images of one size, some gray (H, W) and some RGB (H, W, 3) -> one array with ``channels`` (0: RGB
    if any image has colour, else gray)."""
    if channels == 0:
        channels = 3 if any(_is_color(im) for im in images) else 1
    if channels == 1:
        return np.stack(
            [
                im
                if im.ndim == 2
                else np.clip(np.rint(to_gray(im[None])[0]), 0, 255).astype(np.uint8)
                for im in images
            ]
        )
    return np.stack([im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=-1) for im in images])


def _drawer(file_name: str) -> int:
    """Omniglot's ``CCCC_DD.png`` -> DD (who drew it); -1 for any other name."""
    stem = file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    head, _, dd = stem.rpartition("_")
    return int(dd) if head and dd.isdigit() else -1


def _collect(items, size: int, where: str, seen: set):
    """items: iterable of (group, class_name, path_for_errors, raw bytes) -> FewShotData parts.

    An image already ``seen`` (same alphabet, character and file name, e.g. Greek and Latin, which both
    small Omniglot background sets contain) is skipped, so a class never holds one drawing twice."""
    names, groups, images, labels, drawers, index = [], [], [], [], [], {}
    for group, cname, path, raw in items:
        file_name = path.rsplit("/", 1)[-1]
        if (group, cname, file_name) in seen:
            continue
        seen.add((group, cname, file_name))
        key = (group, cname)
        if key not in index:
            index[key] = len(names)
            names.append(f"{group}/{cname}" if group else cname)
            groups.append(group)
        if not raw:
            raise DataError(f"{path}: empty image file")
        images.append(_to_size(_decode(raw, path), size))
        labels.append(index[key])
        drawers.append(_drawer(file_name))
    if not images and not seen:
        raise DataError(f"{where}: no images found (expected class_name/*.png|jpg folders)")
    return images, labels, names, groups, drawers


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
                if (
                    name.lower().endswith(IMAGE_EXTENSIONS)
                    and len(parts) >= 3
                    and not parts[-1].startswith(".")
                ):
                    yield parts[-3], parts[-2], f"{path}:{name}", zf.read(name)
    else:
        for f in sorted(path.rglob("*")):
            rel = f.relative_to(path).parts
            if f.suffix.lower() in IMAGE_EXTENSIONS and len(rel) >= 3:
                yield rel[-3], rel[-2], str(f), f.read_bytes()


def _folder_items(path: Path):
    for name, files in class_folders(path):
        if not files:
            raise DataError(
                f"{path / name}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        for f in files:
            yield "", name, str(f), f.read_bytes()


def _fingerprint(paths) -> str:
    h = hashlib.sha1()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def _load_cached(kind: str, paths, size: int, items_fn, channels: int = 0) -> FewShotData:
    """The images of ``paths`` at ``size`` with ``channels`` (0: as the data has them), cached once read."""
    key = f"{kind}-{_fingerprint(paths)}-{size}-c{channels}-v{CACHE_VERSION}"
    cache = cache_root("data") / f"{key}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return FewShotData(
                    z["images"], z["labels"], meta["names"], meta["groups"], drawers=z["drawers"]
                )
        except Exception:
            pass  # a damaged cache is rebuilt
    imgs, labs, names, groups, drawers, seen, pos = [], [], [], [], [], set(), {}
    for p in paths:
        im, lab, nm, gr, dr = _collect(items_fn(p), size, str(p), seen)
        # Classes are keyed by name across paths: a second zip may add drawings to a class.
        for g, n in zip(gr, nm):
            if n not in pos:
                pos[n] = len(names)
                names.append(n)
                groups.append(g)
        labs += [pos[nm[i]] for i in lab]
        imgs += im
        drawers += dr
    data = FewShotData(
        _stack(imgs, channels), np.array(labs), names, groups, drawers=np.array(drawers, np.int16)
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(
        cache,
        lambda f: np.savez(
            f,
            images=data.images,
            labels=data.labels,
            drawers=data.drawers,
            meta=np.array(json.dumps({"names": names, "groups": groups})),
        ),
    )
    return data


def rotate_classes(data: FewShotData) -> FewShotData:
    """Add 90/180/270-degree rotations of every class as new classes (Omniglot practice, Santoro et al. 2016)."""
    imgs, labs, names, groups = (
        [data.images],
        [data.labels],
        list(data.class_names),
        list(data.groups),
    )
    for k in (1, 2, 3):
        imgs.append(np.rot90(data.images, k, axes=(1, 2)))
        labs.append(data.labels + k * data.num_classes)
        names += [f"{n}@rot{90 * k}" for n in data.class_names]
        groups += [f"{g}@rot{90 * k}" for g in data.groups]
    return FewShotData(
        np.ascontiguousarray(np.concatenate(imgs)),
        np.concatenate(labs),
        names,
        groups,
        data.spec,
        np.tile(data.drawers, 4),
    )


def _split_classes(data: FewShotData, split: str, seed: int = 0, kind: str = "glyphs") -> list:
    """Deterministic class split. Grouped data (alphabets) is split by whole groups, so held-out
    alphabets are never seen in training; ungrouped data by class.

    - glyphs: by script, 15% of them val and 15% test (16 / 4 / 4 scripts, 2,059 / 780 / 731 classes).
    - omniglot: train / val (15% of the alphabets, at least one: the smallest ones, which leaves the most
      characters to train on) / test (25%, at least one, drawn among the alphabets with at least
      ``LAKE_WAYS`` characters so Lake's 20-way within-alphabet runs fit, ``metalite.training.lake``).
    - folder: 85/15 train/val, at least 2 validation classes from 4 classes on; ``test`` is the same held-out
      classes as ``val`` (the user brings a test set).
      A folder holding ``train/`` and ``val/`` (optionally ``test/``) folders of classes is split by them
      instead (``load_data``).
    - emoji: by category, fixed rather than drawn (``emoji_split``).
    """
    if split == "all":
        return list(range(data.num_classes))
    if kind == "emoji":
        chosen = set(emoji_split(data.groups)[split])
        return [c for c in range(data.num_classes) if data.groups[c] in chosen]
    base = [g.split("@rot")[0] for g in data.groups]
    if len(set(base)) < 3:
        base = [n.split("@rot")[0] for n in data.class_names]
    units = list(np.random.default_rng(seed).permutation(sorted(set(base))))
    n = len(units)
    n_val = max(1, int(round(0.15 * n)))
    if (
        kind == "folder" and n >= 2 * MIN_SPLIT_CLASSES
    ):  # validation runs 2-way episodes: it needs 2 classes
        n_val = max(n_val, MIN_SPLIT_CLASSES)
    n_test = {"glyphs": max(1, int(round(0.15 * n))), "omniglot": max(1, int(round(0.25 * n)))}.get(
        kind, 0
    )
    if n - n_val - n_test < 1:
        raise DataError(
            f"{data.spec or 'data'}: too few classes/groups ({n}) to split off held-out classes"
        )
    if kind == "omniglot":
        size = {u: base.count(u) for u in units}
        lake = [u for u in units if size[u] >= LAKE_WAYS]
        test = (lake if len(lake) >= n_test else units)[:n_test]
        rest = sorted((u for u in units if u not in test), key=lambda u: (size[u], u))
        parts = {"test": test, "val": rest[:n_val], "train": rest[n_val:]}
    else:
        parts = {
            "val": units[:n_val],
            "test": units[n_val : n_val + n_test],
            "train": units[n_val + n_test :],
        }
        if not n_test:
            parts["test"] = parts["val"]
    chosen = set(parts[split])
    return [c for c in range(data.num_classes) if base[c] in chosen]


def emoji_split(groups) -> dict:
    """{"train", "val", "test": [categories]} of emoji data: test is ``EMOJI_TEST_GROUPS`` (never trained on);
    val is the smallest other category with at least ``EMOJI_MIN_VAL_CONCEPTS`` concepts (ties by name), so
    20-way validation fits and the fewest training concepts are lost; train is every other category."""
    size = {}
    for g in groups:
        size[g] = size.get(g, 0) + 1
    test = [g for g in EMOJI_TEST_GROUPS if g in size]
    rest = sorted((g for g in size if g not in test), key=lambda g: (size[g], g))
    big = [g for g in rest if size[g] >= EMOJI_MIN_VAL_CONCEPTS]
    val = (big or rest)[:1]
    train = [g for g in rest if g not in val]
    if not train or not val:
        raise DataError(
            f"emoji data has categories {sorted(size)}: too few to split off validation and test"
        )
    return {"train": sorted(train), "val": val, "test": test}


def portable_spec(spec: str) -> str:
    """``spec`` with file names instead of paths (``omniglot:small1.zip,small2.zip``): what a bundle's
    manifest records, since paths on the training machine mean nothing elsewhere."""
    kind, sep, rest = (spec or "").strip().partition(":")
    if not sep:
        return kind
    return f"{kind}:" + ",".join(Path(p).name for p in rest.split(",") if p)


def absolute_spec(spec: str) -> str:
    """``spec`` with every path absolute (and checked to exist): what a model directory kept for later runs
    records, so they find its data whatever their working directory."""
    kind, paths = parse_spec(spec)
    return spec.strip() if not paths else f"{kind}:" + ",".join(str(p.resolve()) for p in paths)


def spec_with_dirs(portable: str) -> str:
    """``omniglot:a.zip,b.zip`` -> ``omniglot:DIR/a.zip,DIR/b.zip``: the --data to pass for a bundle's recorded data."""
    kind, sep, rest = (portable or "").partition(":")
    return (
        portable
        if not sep
        else f"{kind}:" + ",".join(f"DIR/{Path(p).name}" for p in rest.split(",") if p)
    )


def describe_split(spec: str, split: str) -> str:
    """``"omniglot:small1.zip,small2.zip (held-out test classes)"``: which data a measurement used."""
    return f"{portable_spec(spec)} ({SPLIT_NAMES.get(split, split + ' classes')})"


def representative_inputs(data: FewShotData, n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 model inputs spread over the classes (one per class in turn, deterministic): the images
    that calibrate int8 activation ranges."""
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(data.indices_of(c)) for c in rng.permutation(data.num_classes)]
    picked, depth = [], 0
    while len(picked) < n and any(depth < len(p) for p in pools):
        picked += [int(p[depth]) for p in pools if depth < len(p)][: n - len(picked)]
        depth += 1
    return data.inputs()[np.array(picked)]


def _presplit(paths) -> bool:
    """A single folder holding ``train/`` and ``val/`` class folders: its split is given, not drawn."""
    return len(paths) == 1 and all((paths[0] / s).is_dir() for s in ("train", "val"))


def _class_files(root: Path) -> list:
    """[(class name, image files)] of a folder of class folders, without decoding anything."""
    return [(name, len(files)) for name, files in class_folders(root)]


def folder_counts(spec: str, split: str) -> np.ndarray | None:
    """Images per class in ``split`` of a ``folder:`` spec, from file names alone (None for other kinds): what
    the split will hold, known before any image is read."""
    kind, paths = parse_spec(spec)
    if kind != "folder":
        return None
    if split != "all" and _presplit(paths):
        sub = split if (paths[0] / split).is_dir() else "val"
        return np.array([n for _, n in _class_files(paths[0] / sub)], int)
    names = {}
    for p in paths:
        for name, n in _class_files(p):
            names[name] = names.get(name, 0) + n
    if not names:
        return np.zeros(0, int)
    counts = np.array(list(names.values()), int)
    shell = FewShotData(
        np.zeros((int(counts.sum()), 1, 1), np.uint8),
        np.repeat(np.arange(len(counts)), counts),
        list(names),
        [""] * len(names),
        spec,
    )
    return shell.counts()[_split_classes(shell, split, 0, kind)] if counts.sum() else counts


def check_folder_fits(spec: str, ways, shots: int, queries: int, val_shots: int = 1) -> None:
    """DataError, before any work, when a ``folder:`` spec's training split cannot fill ``ways``-way episodes of
    ``shots`` + ``queries`` images or its validation split not 2-way ones (``val_shots`` + 1 query)."""
    train = folder_counts(spec, "train")
    if train is None:
        return
    val = folder_counts(spec, "val")
    layout = "a folder needs 4 classes at least (2 of them validate), or train/ and val/ folders of classes"
    need = shots + queries
    usable = int((train >= need).sum())
    if usable < max(MIN_SPLIT_CLASSES, int(ways or 0)):
        wanted = f"--ways {ways}" if ways else f"the {MIN_SPLIT_CLASSES} an episode needs"
        hint = (
            f"; {layout}"
            if len(train) + len(val) < 2 * MIN_SPLIT_CLASSES or usable < MIN_SPLIT_CLASSES
            else ""
        )
        raise DataError(
            f"{spec}: {plural(usable, 'training class')} (of {len(train)}) with at least {need} images "
            f"(--shots {shots} + --queries {queries}), fewer than {wanted}{hint}"
        )
    usable = int((val >= val_shots + 1).sum())
    if usable < MIN_SPLIT_CLASSES:
        raise DataError(
            f"{spec}: {plural(usable, 'validation class')} (of {len(val)}) with {val_shots + 1} images "
            f"or more; 2-way validation episodes need {MIN_SPLIT_CLASSES}; {layout}"
        )


def parse_spec(spec: str):
    """'glyphs' | 'digits' | 'omniglot:P1[,P2]' | 'folder:P' | 'emoji:P' -> (kind, [Path, ...]); raises DataError."""
    spec = (spec or "").strip()
    if spec in ("glyphs", "digits"):
        return spec, []
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("omniglot", "folder", "emoji") or not rest:
        raise DataError(
            f"unknown data spec {spec!r}; use glyphs, digits, omniglot:PATH[,PATH], folder:PATH or "
            "emoji:PATH (scripts/fetch_emoji.py builds one)"
        )
    paths = [Path(p).expanduser() for p in rest.split(",") if p]
    for p in paths:
        if not p.exists():
            raise DataError(f"{p}: no such file or directory")
        if kind == "folder" and not p.is_dir():
            raise DataError(f"{p}: folder: expects a directory of class_name/ folders")
    return kind, paths


def load_data(
    spec: str,
    image_size: int = 28,
    split: str = "all",
    rotations: bool = False,
    seed: int = 0,
    progress=None,
    channels: int | None = None,
) -> FewShotData:
    """Load a dataset spec at ``image_size`` and keep the classes of ``split`` (train/val/test/all).

    Rotations (omniglot) are added after splitting, so a rotated copy never crosses a split. ``channels``:
    None keeps the data's own (module docstring), 1 or 3 converts to gray or RGB as the device would.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    kind, paths = parse_spec(spec)
    want = 0 if channels is None else int(channels)
    if kind == "glyphs":
        from .glyphs import load_glyphs

        imgs, names, groups = load_glyphs(image_size=image_size, progress=progress)
        c, s = imgs.shape[:2]
        imgs = imgs.reshape(c * s, image_size, image_size)
        data = FewShotData(
            imgs if want != 3 else np.repeat(imgs[..., None], 3, axis=-1),
            np.repeat(np.arange(c), s),
            list(names),
            list(groups),
        )
    elif kind == "digits":
        from .digits import load_digits_images

        imgs, labels, names = load_digits_images(image_size)
        data = FewShotData(
            imgs if want != 3 else np.repeat(imgs[..., None], 3, axis=-1),
            labels,
            names,
            ["digits"] * len(names),
        )
    elif kind == "folder" and split != "all" and _presplit(paths):
        sub = (
            split if (paths[0] / split).is_dir() else "val"
        )  # test: the val folder unless a test folder exists
        data = _load_cached("folder", [paths[0] / sub], image_size, _folder_items, want)
        data.spec = spec
        return rotate_classes(data) if rotations else data
    elif kind == "omniglot":
        data = _load_cached("omniglot", paths, image_size, _omniglot_items, want)
    elif kind == "emoji":
        data = _load_cached("emoji", paths, image_size, _omniglot_items, want or 3)
    else:
        data = _load_cached("folder", paths, image_size, _folder_items, want)
    data.spec = spec
    data = data.subset(_split_classes(data, split, seed, kind))
    if rotations:
        data = rotate_classes(data)
    if data.num_classes == 0:
        raise DataError(f"{spec}: split {split!r} has no classes")
    return data
