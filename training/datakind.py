"""What a ``folder:`` dataset holds, read from a sample of its files before any work: ink on paper (drawings,
characters, scans) or photos, in colour or not, and how large, so training picks defaults that fit it.

The default augmentation (``augment.DEFAULT``: affine warps plus stroke-width changes) was measured on
Omniglot's drawings; on photos the stroke operation smears texture and training stays at chance, so photos
train without it unless ``--augment`` says otherwise. Colour images train a colour model unless ``--channels 1``
asks for gray, which drops colour with a warning; images much larger than the input are said to lose detail.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .augment import DEFAULT, NONE

SAMPLE = 48  # files read (a few per class): enough to tell ink from photos, fast on any folder
BACKGROUND_TOLERANCE = 24  # gray levels around an image's border value that count as its background
INK_BACKGROUND = (
    0.75  # background covering this much of an image: ink on paper (Omniglot ~0.9, photos 0.1-0.6)
)
COLOUR_CHROMA = 12.0  # mean |R-G| + |G-B| above this: a colour image
LARGE = 4  # images more than LARGE times the input size on their short side "lose detail"


@dataclass(frozen=True)
class Survey:
    """``kind``: "ink" or "photo"; ``colour``: share of sampled images in colour; ``side``: median short side."""

    kind: str
    colour: float
    side: int
    files: int

    def augment(self) -> dict:
        """The augmentation default that fits: Omniglot's for ink, none for photos."""
        return dict(DEFAULT if self.kind == "ink" else NONE)

    def describe(self, image_size: int) -> str:
        """One line: what the data looks like and what training does with it."""
        what = "ink on paper" if self.kind == "ink" else "photos"
        aug = (
            "the drawing augmentation (--augment to change)"
            if self.kind == "ink"
            else "no augmentation (the drawing augmentation does not fit photos; --augment to set one)"
        )
        return f"{what} ({self.files} images sampled, median {self.side} px): training with {aug}"

    def warnings(self, image_size: int, channels=None) -> list:
        out = []
        if self.colour > 0 and channels == 1:
            out.append(
                f"{100 * self.colour:.0f}% of the sampled images are in colour; --channels 1 makes the model "
                "see gray only, so colour is dropped"
            )
        if self.side > LARGE * image_size:
            out.append(
                f"images are about {self.side} px and the model sees {image_size} px: detail finer than "
                f"1/{image_size} of an image is lost (--image-size to change)"
            )
        return out


def _sample(root: Path) -> list:
    from metalite.runtime.folders import is_image_file

    classes = sorted(p for p in root.rglob("*") if p.is_dir())
    per = [sorted(f for f in c.iterdir() if is_image_file(f)) for c in classes]
    picked, depth = [], 0
    while len(picked) < SAMPLE and any(depth < len(p) for p in per):
        picked += [p[depth] for p in per if depth < len(p)][: SAMPLE - len(picked)]
        depth += 1
    return picked


def _is_ink(gray: np.ndarray) -> bool:
    """Mostly one background value (taken from the border), as drawings and scans are; photos are not."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = np.median(border)
    return float((np.abs(gray - background) <= BACKGROUND_TOLERANCE).mean()) >= INK_BACKGROUND


@lru_cache(maxsize=8)
def survey(root) -> Survey | None:
    """A ``Survey`` of the folder ``root`` (class folders of images, or train/ and val/ of them); None if it
    has no readable image."""
    from PIL import Image

    ink, colour, sides = [], [], []
    for f in _sample(Path(root)):
        try:
            with Image.open(f) as im:
                sides.append(min(im.size))
                im.draft("RGB", (128, 128))  # JPEGs decode small
                rgb = np.asarray(im.convert("RGB").resize((64, 64)), dtype=np.float32)
        except (OSError, ValueError):
            continue  # load_data names unreadable files; the survey only samples
        chroma = np.abs(rgb[..., 0] - rgb[..., 1]).mean() + np.abs(rgb[..., 1] - rgb[..., 2]).mean()
        colour.append(chroma > COLOUR_CHROMA)
        ink.append(_is_ink(rgb.mean(-1)))
    if not ink:
        return None
    return Survey(
        "ink" if np.mean(ink) >= 0.5 else "photo",
        float(np.mean(colour)),
        int(np.median(sides)),
        len(ink),
    )
