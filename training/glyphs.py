"""The built-in "glyphs" few-shot dataset: Unicode characters rendered from the fonts matplotlib ships.

No download: every class is one code point (Latin, Greek, Cyrillic, Armenian, Georgian, Canadian
syllabics, math, arrows, box drawing, ...) whose glyph really exists in at least one of matplotlib's
DejaVu / STIX / Computer Modern fonts; visually identical classes (Latin A, Greek Alpha, Cyrillic A)
are merged. Each sample is the glyph in a random font with a random affine warp, an elastic
(smoothed random) displacement field and stroke-width jitter, so classes look like Omniglot's
handwritten characters. Images follow DESIGN.md "Images": uint8, 255 = paper, 0 = ink, area-resized
with ``metalite.runtime.preprocess.resize_area``. Results are deterministic per seed (each class has
its own RNG seeded from (seed, code point)) and cached as npz.
"""

from __future__ import annotations

import functools
import hashlib
import json
import unicodedata
import warnings
from pathlib import Path

import numpy as np

from metalite.common.files import atomic_write, cache_root
from metalite.common.progress import as_progress
from metalite.runtime.preprocess import resize_area

RECIPE_VERSION = 1  # bump whenever rendering changes: it is part of the cache key

CANVAS = 64  # side (px) of the canvas glyphs are rendered and distorted on before area-resizing
_FIT = 0.72  # the glyph's longer side covers this fraction of the canvas (before random scale)
_MAX_UPSCALE = 3.0  # small glyphs (dots, dashes) are enlarged at most this much
_DEDUP_SIZE = 28  # side of the canonical bitmaps compared for deduplication
_DEDUP_THRESHOLD = 0.012  # ``_shape_distances`` below which two classes count as the same shape

# Fonts sampled from (file stems in matplotlib/mpl-data/fonts/ttf). The first one that has a glyph
# draws its canonical (deduplication) bitmap. STIXNonUni (private use) and STIXSiz* (big delimiters)
# add nothing; Computer Modern fonts use TeX encodings and contribute via their glyph names.
FONTS = (
    "DejaVuSans",
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
    "STIXGeneral",
    "STIXGeneralBol",
    "STIXGeneralItalic",
    "STIXGeneralBolIta",
    "cmr10",
    "cmb10",
    "cmss10",
    "cmti10",
    "cmtt10",
    "cmmi10",
    "cmsy10",
)

# (first, last, group): the Unicode ranges classes are drawn from, grouped like Omniglot alphabets.
BLOCKS = (
    (0x0021, 0x007E, "Latin"),
    (0x00A1, 0x024F, "Latin"),
    (0x0250, 0x02AF, "IPA"),
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0531, 0x058A, "Armenian"),
    (0x05D0, 0x05EA, "Hebrew"),
    (0x0621, 0x064A, "Arabic"),
    (0x07C0, 0x07FF, "NKo"),
    (0x0E81, 0x0EDF, "Lao"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1400, 0x167F, "Canadian Syllabics"),
    (0x1680, 0x169F, "Ogham"),
    (0x16A0, 0x16FF, "Runic"),
    (0x20A0, 0x20CF, "Currency"),
    (0x2100, 0x218F, "Letterlike"),
    (0x2190, 0x21FF, "Arrows"),
    (0x2200, 0x22FF, "Math"),
    (0x2300, 0x23FF, "Technical"),
    (0x2500, 0x257F, "Box Drawing"),
    (0x25A0, 0x25FF, "Geometric Shapes"),
    (0x2600, 0x26FF, "Symbols"),
    (0x2700, 0x27BF, "Dingbats"),
    (0x27C0, 0x27EF, "Math"),
    (0x27F0, 0x27FF, "Arrows"),
    (0x2900, 0x297F, "Arrows"),
    (0x2980, 0x2AFF, "Math"),
    (0x2B00, 0x2BFF, "Symbols"),
    (0x2C00, 0x2C5F, "Glagolitic"),
    (0x2D30, 0x2D7F, "Tifinagh"),
    (0x10330, 0x1034F, "Gothic"),
)


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _group(cp: int, block_group: str) -> str:
    """Latin blocks split into letters, digits and punctuation/symbols; other blocks keep their group."""
    if block_group == "Latin":
        cat = unicodedata.category(chr(cp))
        if cat[0] == "N":
            return "Digits"
        if cat[0] in "PS":
            return "Punctuation"
    return block_group


@functools.cache
def _font_tables() -> dict:
    """{font: {code point: character to type}} for glyphs each font really has (non-empty, not .notdef).

    A glyph counts when its name maps back to the code point (Adobe glyph list or uniXXXX), which also
    decodes the TeX-encoded Computer Modern fonts (e.g. cmmi10 types "!" to draw omega).
    """
    import logging

    from fontTools import agl
    from fontTools.ttLib import TTFont

    logging.getLogger("fontTools.ttLib.tables._h_e_a_d").setLevel(
        logging.ERROR
    )  # TeX fonts: odd dates

    wanted = set()
    for lo, hi, _ in BLOCKS:
        wanted.update(range(lo, hi + 1))
    tables = {}
    for name in FONTS:
        font = TTFont(_font_dir() / f"{name}.ttf", lazy=True)
        loca, order = font["loca"], font.getGlyphOrder()
        gid = {g: i for i, g in enumerate(order)}
        table = {}
        for typed, gname in font.getBestCmap().items():
            real = agl.toUnicode(gname)
            if len(real) != 1 or ord(real) not in wanted or gname == ".notdef":
                continue
            if loca[gid[gname]] == loca[gid[gname] + 1]:  # no outline data: a blank glyph
                continue
            if ord(real) != typed and ord(real) in table:  # prefer the font's direct mapping
                continue
            table[ord(real)] = chr(typed)
        tables[name] = table
        font.close()
    return tables


@functools.cache
def _pil_font(name: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(_font_dir() / f"{name}.ttf"), size)


def _raster(font: str, char: str, canvas: int) -> np.ndarray | None:
    """The glyph tightly cropped, float32 ink in [0, 1] at font size ``canvas`` px; None if blank."""
    from PIL import Image, ImageDraw

    pil_font = _pil_font(font, canvas)
    x0, y0, x1, y1 = pil_font.getbbox(char)
    pad = 2
    w, h = max(x1 - x0, 1) + 2 * pad, max(y1 - y0, 1) + 2 * pad
    im = Image.new("L", (w, h), 0)
    ImageDraw.Draw(im).text((pad - x0, pad - y0), char, fill=255, font=pil_font)
    box = im.getbbox()
    if box is None:
        return None
    ink = np.asarray(im.crop(box), dtype=np.float32) / 255.0
    return ink if ink.sum() >= 2.0 else None


def _warp(
    sources: np.ndarray,
    sizes: np.ndarray,
    which: np.ndarray,
    inv: np.ndarray,
    offset: np.ndarray,
    disp: np.ndarray | None,
    canvas: int,
) -> np.ndarray:
    """Bilinear sampling of N warped glyphs at once -> (N, canvas, canvas) ink.

    ``sources`` (K, Hmax + 2, Wmax + 2) holds glyph k at [1:1+h, 1:1+w] (``sizes[k]`` = (h, w)), zero
    elsewhere; output pixel p of image n samples glyph ``which[n]`` at ``inv[n] @ (p + disp[n](p)) + offset[n]``.
    """
    n = len(which)
    grid = np.arange(canvas, dtype=np.float32) + 0.5
    yy = np.broadcast_to(grid[None, :, None], (n, canvas, canvas))
    xx = np.broadcast_to(grid[None, None, :], (n, canvas, canvas))
    if disp is not None:
        yy, xx = yy + disp[:, 0], xx + disp[:, 1]
    inv = inv.astype(np.float32)
    off = offset.astype(np.float32)
    sy = inv[:, 0, 0, None, None] * yy + inv[:, 0, 1, None, None] * xx + off[:, 0, None, None] + 0.5
    sx = inv[:, 1, 0, None, None] * yy + inv[:, 1, 1, None, None] * xx + off[:, 1, None, None] + 0.5
    h = sizes[which, 0].astype(np.float32)[:, None, None]
    w = sizes[which, 1].astype(np.float32)[:, None, None]
    sy = np.clip(sy, 0, h + 0.999)  # padded coordinates: rows 0 and h + 1 are the zero border
    sx = np.clip(sx, 0, w + 0.999)
    y0 = sy.astype(np.intp)
    x0 = sx.astype(np.intp)
    fy, fx = sy - y0, sx - x0
    k = which[:, None, None]
    top = sources[k, y0, x0] * (1 - fx) + sources[k, y0, x0 + 1] * fx
    bottom = sources[k, y0 + 1, x0] * (1 - fx) + sources[k, y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _stack(rasters: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pack cropped glyphs into one zero-bordered array for ``_warp``: (sources, sizes)."""
    sizes = np.array([r.shape for r in rasters], dtype=np.intp)
    sources = np.zeros((len(rasters), sizes[:, 0].max() + 2, sizes[:, 1].max() + 2), np.float32)
    for k, r in enumerate(rasters):
        sources[k, 1 : 1 + r.shape[0], 1 : 1 + r.shape[1]] = r
    return sources, sizes


def _fit(sizes: np.ndarray, canvas: int) -> np.ndarray:
    """Base scale per glyph: its longer side covers ``_FIT`` of the canvas, enlarged at most ``_MAX_UPSCALE``x."""
    return np.minimum(_FIT * canvas / sizes.max(axis=1), _MAX_UPSCALE)


@functools.lru_cache(maxsize=16)
def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    """(n, n) matrix applying a 1-D Gaussian (radius 3 sigma, reflected borders) along one axis."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    m = np.zeros((n, n), np.float64)
    for i in range(n):
        for t, wt in zip(range(i - r, i + r + 1), k):
            j = t
            while j < 0 or j >= n:  # reflect (repeatedly, for kernels wider than the signal)
                j = -j - 1 if j < 0 else 2 * n - j - 1
            m[i, j] += wt
    return m.astype(np.float32)


def gaussian_smooth(fields: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of the last two axes of ``fields`` (rows, then columns); numpy only."""
    g = _gauss_matrix(fields.shape[-2], sigma)
    gw = g if fields.shape[-1] == fields.shape[-2] else _gauss_matrix(fields.shape[-1], sigma)
    return g @ fields @ gw.T


def _morph(ink: np.ndarray, grow: bool) -> np.ndarray:
    """3x3 grey dilation (grow) or erosion of ink images (..., H, W), as two separable 3-tap max/min passes."""
    op = np.maximum if grow else np.minimum
    out = ink.copy()
    out[..., 1:, :] = op(out[..., 1:, :], ink[..., :-1, :])
    out[..., :-1, :] = op(out[..., :-1, :], ink[..., 1:, :])
    if not grow:  # outside the canvas is paper
        out[..., 0, :] = 0
        out[..., -1, :] = 0
    res = out.copy()
    res[..., :, 1:] = op(res[..., :, 1:], out[..., :, :-1])
    res[..., :, :-1] = op(res[..., :, :-1], out[..., :, 1:])
    if not grow:
        res[..., :, 0] = 0
        res[..., :, -1] = 0
    return res


def _stroke(ink: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Per image, thicken (delta > 0) or thin (delta < 0, down to -1) strokes by ~``delta`` px per side.

    Integer steps are 3x3 dilations/erosions, fractions blend two neighbouring steps; an erosion that
    would remove more than half of an image's ink is not applied to it.
    """
    top = int(np.ceil(max(delta.max(), 0.0)))
    levels = [_morph(ink, False), ink]
    keep = levels[0].sum(axis=(-2, -1)) >= 0.5 * ink.sum(axis=(-2, -1))
    levels[0] = np.where(keep[:, None, None], levels[0], ink)
    for _ in range(top):
        levels.append(_morph(levels[-1], True))
    levels = np.stack(levels)  # level j holds delta = j - 1
    pos = np.clip(delta, -1.0, top) + 1.0
    lo = np.minimum(np.floor(pos).astype(np.intp), len(levels) - 1)
    hi = np.minimum(lo + 1, len(levels) - 1)
    frac = (pos - lo)[:, None, None].astype(np.float32)
    n = np.arange(len(delta))
    return (1 - frac) * levels[lo, n] + frac * levels[hi, n]


def _canonical(cp: int, fonts: tuple[str, ...], tables: dict) -> np.ndarray | None:
    """Undistorted, normalized rendering in the class's first font, area-resized for comparison."""
    canvas = 2 * _DEDUP_SIZE
    src = _raster(fonts[0], tables[fonts[0]][cp], canvas)
    if src is None:
        return None
    sources, sizes = _stack([src])
    inv = np.eye(2)[None] / _fit(sizes, canvas)[:, None, None]
    offset = sizes / 2 - inv[0] @ np.array([canvas / 2, canvas / 2])
    img = _warp(sources, sizes, np.zeros(1, np.intp), inv, offset, None, canvas)
    return resize_area(img[0], (_DEDUP_SIZE, _DEDUP_SIZE)).ravel()


def _shape_distances(feats: np.ndarray) -> np.ndarray:
    """Pairwise |a - b|^2 / (|a|^2 + |b|^2) of flattened bitmaps: 0 = identical, 1 = no shared ink."""
    feats = feats.astype(np.float64)
    sq = (feats**2).sum(1)
    denom = sq[:, None] + sq[None, :] + 1e-9
    return np.maximum(denom - 2 * feats @ feats.T, 0.0) / denom


@functools.cache
def glyph_classes() -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    """The deduplicated classes: (code point, group, fonts that have the glyph), in code point order.

    Candidates are letters, digits, punctuation and symbols of ``BLOCKS`` present in some font; a
    candidate is dropped when its canonical bitmap is within ``_DEDUP_THRESHOLD`` (``_shape_distances``)
    of an earlier kept class, so Latin A, Greek Alpha and Cyrillic A become one class.
    """
    tables = _font_tables()
    candidates = []
    for lo, hi, block_group in BLOCKS:
        for cp in range(lo, hi + 1):
            if unicodedata.category(chr(cp))[0] not in "LNSP":
                continue
            fonts = tuple(f for f in FONTS if cp in tables[f])
            if fonts:
                candidates.append((cp, _group(cp, block_group), fonts))
    feats, kept = [], []
    for cp, group, fonts in candidates:
        f = _canonical(cp, fonts, tables)
        if f is not None:
            feats.append(f)
            kept.append((cp, group, fonts))
    dist = _shape_distances(np.asarray(feats))
    keep = np.zeros(len(kept), bool)
    for i in range(len(kept)):  # greedy: a class survives unless it matches an earlier survivor
        keep[i] = not (dist[i, :i][keep[:i]] < _DEDUP_THRESHOLD).any()
    kept = [c for c, k in zip(kept, keep) if k]
    return tuple(kept)


def class_name(cp: int) -> str:
    """ "U+0041 LATIN CAPITAL LETTER A" (the character itself when Unicode has no name for it)."""
    return f"U+{cp:04X} {unicodedata.name(chr(cp), chr(cp))}"


def _render_class(
    cp: int, fonts: tuple[str, ...], samples: int, seed: int, canvas: int
) -> np.ndarray:
    """(samples, canvas, canvas) float ink in [0, 1] for one class, from an RNG seeded by (seed, cp).

    Per sample: a random font having the glyph, fit to the canvas, then a random affine (rotation
    +-10 deg, per-axis scale, shear, shift), an elastic field (Gaussian-smoothed uniform noise) and
    stroke-width jitter.
    """
    tables = _font_tables()
    rng = np.random.default_rng([RECIPE_VERSION, seed, cp])
    font_choice = rng.integers(len(fonts), size=samples)
    rot = np.deg2rad(rng.uniform(-10, 10, size=samples))
    shear = rng.uniform(-0.15, 0.15, size=samples)
    zoom = rng.uniform(0.8, 1.08, size=(samples, 1)) * np.exp(
        rng.uniform(-0.06, 0.06, size=(samples, 2))
    )
    shift = rng.uniform(-0.07, 0.07, size=(samples, 2)) * canvas
    noise = rng.uniform(-1, 1, size=(samples, 2, canvas, canvas)).astype(np.float32)
    amount = rng.uniform(0.01, 0.03, size=samples) * canvas  # RMS displacement, px
    delta = rng.uniform(-0.8, 1.5, size=samples) * canvas / CANVAS  # stroke change, px per side

    used = sorted(set(font_choice.tolist()))
    rasters = [_raster(fonts[f], tables[fonts[f]][cp], canvas) for f in used]
    fallback = next((r for r in rasters if r is not None), None)
    if fallback is None:  # blank in every chosen font (rare): use the class's first font
        fallback = _raster(fonts[0], tables[fonts[0]][cp], canvas)
    rasters = [fallback if r is None else r for r in rasters]
    sources, sizes = _stack(rasters)
    which = np.searchsorted(used, font_choice)

    s = _fit(sizes, canvas)[which]
    cos, sin = np.cos(rot), np.sin(rot)
    r = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    sh = np.zeros((samples, 2, 2))
    sh[:, 0, 0] = sh[:, 1, 1] = 1.0
    sh[:, 1, 0] = shear
    fwd = s[:, None, None] * r @ sh @ (zoom[:, :, None] * np.eye(2))
    inv = np.linalg.inv(fwd)
    offset = sizes[which] / 2 - np.einsum("nij,nj->ni", inv, canvas / 2 + shift)

    disp = gaussian_smooth(noise, 0.09 * canvas)
    rms = np.sqrt((disp**2).mean(axis=(1, 2, 3)))
    disp *= (amount / (rms + 1e-8)).astype(np.float32)[:, None, None, None]
    ink = _warp(sources, sizes, which, inv, offset, disp, canvas)
    return np.clip(_stroke(ink, delta), 0.0, 1.0)


def _to_pixels(ink: np.ndarray, image_size: int) -> np.ndarray:
    """Float ink (N, H, W) -> uint8 (N, size, size) with 255 = paper, via area resizing."""
    paper = 255.0 * (1.0 - ink)
    small = resize_area(paper, (image_size, image_size))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def _render(
    classes, image_size: int = 28, samples_per_class: int = 20, seed: int = 0, progress=None
) -> np.ndarray:
    """Render ``classes`` (items of ``glyph_classes()``) -> uint8 (C, S, size, size); no caching.

    ``progress``: a ``metalite.common.progress.Progress`` told about every class rendered.
    """
    canvas = max(CANVAS, image_size)
    images = np.empty((len(classes), samples_per_class, image_size, image_size), np.uint8)
    with as_progress(progress).task("rendering glyphs", len(classes)) as task:
        for k, (cp, _, fonts) in enumerate(classes):
            images[k] = _to_pixels(
                _render_class(cp, fonts, samples_per_class, seed, canvas), image_size
            )
            task.advance(1)
    return images


def _cache_key(image_size: int, samples_per_class: int, seed: int) -> str:
    """File name carrying every input of the rendering: parameters, recipe, fonts and renderer versions."""
    import matplotlib
    import PIL
    from PIL import features

    spec = {
        "recipe": RECIPE_VERSION,
        "image_size": image_size,
        "samples": samples_per_class,
        "seed": seed,
        "matplotlib": matplotlib.__version__,
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "numpy": np.__version__.split(".")[0],
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"glyphs-r{RECIPE_VERSION}-{image_size}px-{samples_per_class}s-seed{seed}-{digest}.npz"


def load_glyphs(
    image_size: int = 28, samples_per_class: int = 20, seed: int = 0, cache_dir=None, progress=None
):
    """-> (images uint8 (C, S, H, W), class_names list[str] (e.g. "U+0041 LATIN CAPITAL LETTER A"), groups list[str])

    Renders every class of ``glyph_classes()`` once and caches the result as npz under ``cache_dir``
    (default ``metalite.common.files.cache_root("glyphs")``), written atomically.
    """
    if image_size < 1 or samples_per_class < 1:
        raise ValueError(
            f"image_size and samples_per_class must be >= 1, got {image_size}, {samples_per_class}"
        )
    root = Path(cache_dir) if cache_dir is not None else cache_root("glyphs")
    path = root / _cache_key(image_size, samples_per_class, seed)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                return (
                    z["images"],
                    [str(s) for s in z["class_names"]],
                    [str(s) for s in z["groups"]],
                )
        except (OSError, ValueError, KeyError):
            pass  # corrupt or foreign file: render again and overwrite it
    as_progress(progress).log(f"rendering the glyph dataset once (cached in {root})")
    classes = glyph_classes()
    images = _render(classes, image_size, samples_per_class, seed, progress)
    names = [class_name(cp) for cp, _, _ in classes]
    groups = [g for _, g, _ in classes]
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write(
            path,
            lambda f: np.savez(
                f, images=images, class_names=np.array(names), groups=np.array(groups)
            ),
        )
    except OSError as e:  # a read-only cache must not stop training
        warnings.warn(f"could not cache glyphs in {root}: {e}", RuntimeWarning, stacklevel=2)
    return images, names, groups
