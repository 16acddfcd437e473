#!/usr/bin/env python3
"""Fetch three freely licensed emoji sets from npm and build the ``emoji:`` data tree (docs/colour.md).

    python scripts/fetch_emoji.py                       # -> ~/.cache/metalite/emoji/data (or $METALITE_CACHE/emoji)
    metalite train --data emoji:~/.cache/metalite/emoji/data ...

A class is a concept (the emoji's unified code point, from emoji-datasource's ``emoji.json``), its images are
the artists' renderings of it, its group is the emoji's category: ``CATEGORY/UNIFIED/UNIFIED_AA.png`` with AA
the artist (01 Google Noto, Apache-2.0; 02 Twitter Twemoji, CC-BY 4.0; 03 OpenMoji, CC-BY-SA 4.0). Apple's
and Facebook's images are not free and are never used. Every image is composited onto the white background
(``metalite.runtime.preprocess.BACKGROUND``) at ``--size`` pixels (64); concepts drawn by fewer than two
artists are left out (cross-artist one-shot needs two). OpenMoji ships SVG only: ``rsvg-convert``
(Debian ``librsvg2-bin``) renders it; without it the tree has two artists. Needs npm and Pillow; idempotent.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from PIL import Image

PACKAGES = {
    "google": "emoji-datasource-google@16.0.0",
    "twitter": "emoji-datasource-twitter@16.0.0",
    "openmoji": "openmoji@17.0.0",
}
ARTISTS = {"google": 1, "twitter": 2, "openmoji": 3}
LICENSES = {
    "google": "Google Noto Color Emoji, Apache License 2.0 (https://github.com/googlefonts/noto-emoji)",
    "twitter": "Twitter Twemoji, CC-BY 4.0 (https://github.com/jdecked/twemoji), "
    "graphics by Twitter, Inc and other contributors",
    "openmoji": "OpenMoji, CC-BY-SA 4.0 (https://openmoji.org), the open-source emoji and icon project",
}
BACKGROUND = (255, 255, 255)


def default_root() -> Path:
    base = os.environ.get("METALITE_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "metalite") / "emoji"


def npm_pack(spec: str, dest: Path) -> Path:
    """The package tarball in ``dest``, downloaded with ``npm pack`` once."""
    name, version = spec.rsplit("@", 1)
    tgz = dest / f"{name}-{version}.tgz"
    if not tgz.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(dest)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return tgz


def composite(raw: bytes, size: int) -> Image.Image:
    """An image file's bytes -> RGB ``size`` x ``size`` on the white background (alpha composited)."""
    with Image.open(io.BytesIO(raw)) as im:
        im = im.convert("RGBA")
        if im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.LANCZOS)
        out = Image.new("RGB", im.size, BACKGROUND)
        out.paste(im, mask=im.getchannel("A"))
        return out


_GRID = re.compile(
    rb'<g id="grid"\s*/>|<g id="grid">.*?</g>', re.S
)  # OpenMoji's design guides, not the emoji


def render_svg(svg: bytes, size: int) -> bytes | None:
    """PNG bytes of an SVG rendered by rsvg-convert at ``size`` px (OpenMoji's guide grid removed first), or None
    when rsvg-convert is missing or fails."""
    svg = _GRID.sub(b"", svg)
    try:
        got = subprocess.run(
            ["rsvg-convert", "-w", str(size), "-h", str(size), "-f", "png"],
            input=svg,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return got.stdout if got.returncode == 0 and got.stdout else None


def _members(tgz: Path, prefix: str, suffix: str) -> dict:
    """{file name: bytes} of the tarball's members under ``prefix`` ending in ``suffix``."""
    out = {}
    with tarfile.open(tgz) as tf:
        for m in tf:
            if m.isfile() and m.name.startswith(prefix) and m.name.endswith(suffix):
                out[m.name.rsplit("/", 1)[-1]] = tf.extractfile(m).read()
    return out


def _emoji_json(tgz: Path) -> list:
    with tarfile.open(tgz) as tf:
        return json.load(tf.extractfile("package/emoji.json"))


def build(root: Path, size: int, say=print) -> Path:
    npm = root / "npm"
    tarballs = {k: npm_pack(spec, npm) for k, spec in PACKAGES.items()}
    emoji = [e for e in _emoji_json(tarballs["google"]) if e.get("category")]
    say(f"{len(emoji)} concepts in emoji.json")
    sources = {
        "google": _members(tarballs["google"], "package/img/google/64/", ".png"),
        "twitter": _members(tarballs["twitter"], "package/img/twitter/64/", ".png"),
    }
    svgs = {
        k[:-4].upper(): v for k, v in _members(tarballs["openmoji"], "package/src/", ".svg").items()
    }
    have_rsvg = shutil.which("rsvg-convert") is not None
    if not have_rsvg:
        say("rsvg-convert not found (apt-get install librsvg2-bin): OpenMoji left out")
    out = root / "data"
    tmp = root / "data.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"concepts": 0, "images": 0, "skipped_one_artist": 0, **{k: 0 for k in ARTISTS}}
    for i, e in enumerate(emoji):
        unified = e["unified"].lower()
        images = {}
        for artist in ("google", "twitter"):
            raw = sources[artist].get(e["image"]) if e.get(f"has_img_{artist}") else None
            if raw:
                images[artist] = composite(raw, size)
        svg = svgs.get(e["unified"].upper()) or svgs.get((e.get("non_qualified") or "").upper())
        if svg and have_rsvg:
            png = render_svg(svg, 4 * size)
            if png:
                images["openmoji"] = composite(png, size)
        if len(images) < 2:
            counts["skipped_one_artist"] += 1
            continue
        d = tmp / e["category"] / unified
        d.mkdir(parents=True, exist_ok=True)
        for artist, im in images.items():
            im.save(d / f"{unified}_{ARTISTS[artist]:02d}.png", optimize=True)
            counts[artist] += 1
        counts["concepts"] += 1
        counts["images"] += len(images)
        if (i + 1) % 200 == 0:
            say(f"{i + 1}/{len(emoji)} concepts")
    (tmp / "credits.json").write_text(
        json.dumps(
            {
                "artists": {
                    f"{ARTISTS[k]:02d}": {"set": k, "license": v} for k, v in LICENSES.items()
                },
                "packages": PACKAGES,
                "size": size,
                "counts": counts,
            },
            indent=1,
        )
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    say(f"wrote {out}: {json.dumps(counts)}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--root", type=Path, default=default_root(), help="cache folder (default %(default)s)"
    )
    ap.add_argument("--size", type=int, default=64, help="side of the stored images in pixels")
    args = ap.parse_args(argv)
    build(args.root.expanduser(), args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
