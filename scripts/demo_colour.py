#!/usr/bin/env python3
"""Colour on the device, checked by eye: teach a colour bundle emoji it never trained on from one artist's
drawings, ask it another artist's, and draw a contact sheet of what it answered.

    python scripts/demo_colour.py [--out runs/demo-colour] [--bundle models/emoji] [--data tests/data/emoji]
                                  [--support-artist 1] [--query-artists 2,3] [--ways 5] [--seed 0]

The concepts come from the held-out test categories of ``emoji:`` data ("Animals & Nature", "Food & Drink":
``metalite.training.datasets.emoji_split``), so the bundle never saw them; of the committed fixture that is four
(dog face, cherry blossom, red apple, carrot). Artists: 1 Noto, 2 Twemoji, 3 OpenMoji. The pictures are written
as PNG files (``OUT/support/<concept>/``, ``OUT/query/<artist>/``) and the runtime learns and predicts from those
files, as a device would (``metalite adapt OUT/support`` learns the same classes). Prints one line per query and
the count right; writes ``OUT/predictions.json`` and ``OUT/contact_sheet.png`` (the taught row on top, a row
per asking artist below, each picture with the answer and a green tick or a red cross).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import unicodedata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ARTISTS = {
    1: "Noto",
    2: "Twemoji",
    3: "OpenMoji",
}  # the emoji: file suffix _01, _02, _03 (docs/colour.md)
SIZE = 64  # pixels of the written pictures: the runtime area-resizes them to the bundle's input
# contact sheet layout, pixels
THUMB, PAD, TEXT_H, ROW_TITLE_W, HEADER_H = 96, 12, 34, 150, 56
CELL_W = THUMB + 2 * PAD + 24  # room for a label under the picture
CELL_H = THUMB + TEXT_H + PAD
OK, WRONG, INK, GREY = (20, 140, 40), (200, 30, 30), (20, 20, 20), (110, 110, 110)


def concept_name(unified: str) -> str:
    """'1f436' -> 'dog face': the Unicode names of an emoji's code points, variation selectors and joiners left out."""
    names = [
        unicodedata.name(chr(int(cp, 16)), cp)
        for cp in unified.split("-")
        if int(cp, 16) not in (0x200D, 0xFE0F, 0xFE0E)
    ]
    return " ".join(names).lower()


def pick(data, support_artist: int, query_artists: list, ways: int, seed: int) -> list:
    """[(concept name, support image, {artist: query image})] of up to ``ways`` concepts every artist drew."""
    rows = []
    for c, full in enumerate(data.class_names):
        idx = np.flatnonzero(data.labels == c)
        by = {int(data.drawers[i]): data.images[i] for i in idx}
        if support_artist in by and all(a in by for a in query_artists):
            rows.append(
                (
                    concept_name(full.rsplit("/", 1)[-1]),
                    by[support_artist],
                    {a: by[a] for a in query_artists},
                )
            )
    if len(rows) > ways:
        keep = np.random.default_rng(seed).choice(len(rows), ways, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    return rows


def write_pictures(out: Path, rows: list) -> tuple:
    """Write the support and query pictures as PNG files; returns (support paths, labels, [(artist, truth, path)])."""
    from PIL import Image

    for sub in ("support", "query"):
        shutil.rmtree(out / sub, ignore_errors=True)
    support, labels, queries = [], [], []
    for name, s, _ in rows:
        d = out / "support" / name
        d.mkdir(parents=True)
        Image.fromarray(s).save(d / "1.png")
        support.append(d / "1.png"), labels.append(name)
    for artist in rows[0][2]:
        d = out / "query" / ARTISTS[artist]
        d.mkdir(parents=True)
        for name, _, by in rows:
            Image.fromarray(by[artist]).save(d / f"{name}.png")
            queries.append((artist, name, d / f"{name}.png"))
    return support, labels, queries


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (Pillow >= 10.1 with FreeType)
    except TypeError:
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _mark(draw, x: int, y: int, right: bool) -> None:
    """A tick or a cross, 14 px, drawn as lines (the default font has neither glyph)."""
    if right:
        draw.line([(x, y + 8), (x + 5, y + 13), (x + 14, y + 1)], fill=OK, width=3)
    else:
        draw.line([(x + 1, y + 1), (x + 13, y + 13)], fill=WRONG, width=3)
        draw.line([(x + 13, y + 1), (x + 1, y + 13)], fill=WRONG, width=3)


def sheet_size(columns: int, query_rows: int) -> tuple:
    """(width, height) of a contact sheet of ``columns`` concepts and ``query_rows`` asking artists."""
    return ROW_TITLE_W + columns * CELL_W + PAD, HEADER_H + (1 + query_rows) * CELL_H + PAD


def contact_sheet(rows: list, results: list, support_artist: int, title: str, subtitle: str):
    """The sheet as a PIL image: taught pictures on top, one row per asking artist, answers and marks below each."""
    from PIL import Image, ImageDraw

    artists = list(rows[0][2])
    im = Image.new("RGB", sheet_size(len(rows), len(artists)), "white")
    draw = ImageDraw.Draw(im)
    big, small = _font(16), _font(13)
    draw.text((PAD, PAD), title, font=big, fill=INK)
    draw.text((PAD, PAD + 20), subtitle, font=small, fill=GREY)
    answer = {
        (r["artist"], r["truth"]): r for r in results
    }  # artist by name, as in predictions.json

    def cell(col: int, row: int, picture: np.ndarray):
        x, y = ROW_TITLE_W + col * CELL_W, HEADER_H + row * CELL_H
        thumb = Image.fromarray(picture).resize((THUMB, THUMB), Image.Resampling.LANCZOS)
        im.paste(thumb, (x + (CELL_W - THUMB) // 2, y))
        return x, y + THUMB + 4

    draw.text((PAD, HEADER_H + THUMB // 2 - 16), "taught", font=big, fill=INK)
    draw.text(
        (PAD, HEADER_H + THUMB // 2 + 4), f"({ARTISTS[support_artist]})", font=small, fill=GREY
    )
    for col, (name, support, _by) in enumerate(rows):
        x, y = cell(col, 0, support)
        draw.text((x + PAD, y), _fit(draw, name, small, CELL_W - 2 * PAD), font=small, fill=INK)
    for row, artist in enumerate(artists, 1):
        y0 = HEADER_H + row * CELL_H + THUMB // 2
        draw.text((PAD, y0 - 16), "asked", font=big, fill=INK)
        draw.text((PAD, y0 + 4), f"({ARTISTS[artist]})", font=small, fill=GREY)
        for col, (name, _support, by) in enumerate(rows):
            r = answer[ARTISTS[artist], name]
            x, y = cell(col, row, by[artist])
            _mark(draw, x + PAD, y + 1, r["right"])
            draw.text(
                (x + PAD + 20, y),
                _fit(draw, r["label"], small, CELL_W - 2 * PAD - 20),
                font=small,
                fill=OK if r["right"] else WRONG,
            )
            draw.text((x + PAD + 20, y + 15), f"{r['confidence']:.0%}", font=small, fill=GREY)
    return im


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "demo-colour")
    ap.add_argument("--bundle", type=Path, default=REPO / "models" / "emoji")
    ap.add_argument(
        "--data",
        type=Path,
        default=REPO / "tests" / "data" / "emoji",
        help="emoji: layout (the committed fixture, or ~/.cache/metalite/emoji/data)",
    )
    ap.add_argument("--support-artist", type=int, default=1, choices=sorted(ARTISTS))
    ap.add_argument("--query-artists", default="2,3", help="comma-separated, e.g. 2 or 2,3")
    ap.add_argument(
        "--ways", type=int, default=5, help="at most this many concepts (picked with --seed)"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        queried = list(dict.fromkeys(int(a) for a in args.query_artists.split(",")))
    except ValueError:
        queried = []
    if not queried or args.support_artist in queried or not set(queried) <= set(ARTISTS):
        ap.error(f"--query-artists: others than the support artist, of {sorted(ARTISTS)}")

    from metalite.runtime import FewShotClassifier
    from metalite.training.datasets import HELDOUT_SPLIT, load_data

    data = load_data(f"emoji:{args.data}", SIZE, HELDOUT_SPLIT, channels=3)
    rows = pick(data, args.support_artist, queried, args.ways, args.seed)
    if len(rows) < 2:
        ap.error(
            f"{args.data}: fewer than two held-out concepts drawn by artists {args.support_artist} and {queried}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    support, labels, queries = write_pictures(args.out, rows)

    clf = FewShotClassifier(args.bundle)
    clf.fit([str(p) for p in support], labels)
    paths = [str(p) for _, _, p in queries]
    proba = clf.predict_proba(paths)
    results = []
    for (artist, truth, path), p in zip(queries, proba):
        label = clf.classes[int(p.argmax())]
        results.append(
            {
                "image": str(path),
                "artist": ARTISTS[artist],
                "truth": truth,
                "label": label,
                "confidence": float(p.max()),
                "right": label == truth,
            }
        )
    (args.out / "predictions.json").write_text(json.dumps(results, indent=1))

    taught, asked = ARTISTS[args.support_artist], " and ".join(f"{ARTISTS[a]}'s" for a in queried)
    shown = args.bundle.resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else args.bundle
    print(
        f"{shown}: taught {len(rows)} emoji it never trained on, one {taught} drawing each; asked {asked}:"
    )
    for r in results:
        print(
            f"  {r['artist']:9s} {r['truth']:16s} -> {r['label']:16s} {r['confidence']:4.0%}  "
            f"{'right' if r['right'] else 'WRONG'}"
        )
    k, n = sum(r["right"] for r in results), len(results)
    summary = f"{k}/{n} right ({100 * k / n:.0f}%)"
    print(f"cross-artist, {len(rows)}-way 1-shot on held-out concepts: {summary}")
    title, subtitle = (
        f"{shown}: {summary}",
        f"{len(rows)} emoji it never trained on, taught one drawing each",
    )
    sheet = args.out / "contact_sheet.png"
    contact_sheet(rows, results, args.support_artist, title, subtitle).save(sheet, optimize=True)
    print(f"contact sheet: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
