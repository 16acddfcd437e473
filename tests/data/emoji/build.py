"""Rebuild the emoji test fixture from the tree ``scripts/fetch_emoji.py`` builds.

    python tests/data/emoji/build.py ~/.cache/metalite/emoji/data

Copies the concepts in ``PICK`` (README.md), every artist's rendering, shrunk to 32 px, into this folder in
the ``emoji:`` layout ``CATEGORY/UNIFIED/UNIFIED_AA.png`` (AA: 01 Noto, 02 Twemoji, 03 OpenMoji).
"""

import sys
from pathlib import Path

from PIL import Image

SIZE = 32
PICK = {  # category -> unified code points
    "Animals & Nature": ["1f436", "1f338"],  # dog face, cherry blossom
    "Food & Drink": ["1f34e", "1f955"],  # red apple, carrot
    "Activities": ["26bd", "1f3c0"],  # soccer ball, basketball
    "Smileys & Emotion": ["1f600", "2764-fe0f"],  # grinning face, red heart
    "Travel & Places": ["1f697", "1f3e0"],  # automobile, house
}


def main(src: Path) -> None:
    here = Path(__file__).resolve().parent
    for category, concepts in PICK.items():
        for u in concepts:
            files = sorted((src / category / u).glob("*.png"))
            if len(files) < 2:
                raise SystemExit(f"{src / category / u}: fewer than two artists")
            out = here / category / u
            out.mkdir(parents=True, exist_ok=True)
            for f in files:
                with Image.open(f) as im:
                    im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.LANCZOS).save(
                        out / f.name, optimize=True
                    )


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser())
