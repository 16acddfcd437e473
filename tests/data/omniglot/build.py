"""Rebuild the Omniglot test fixture (mini1.zip, mini2.zip) from the two small Omniglot background sets.

    python tests/data/omniglot/build.py ../shared/data/omniglot

The PNGs are copied byte for byte, in Omniglot's layout ``root/alphabet/characterNN/CCCC_DD.png``
(CCCC: Omniglot's character id, DD: the drawer), with fixed zip timestamps so a rebuild is identical.
What is picked (README.md): Greek, 20 characters x 20 drawers (the one alphabet big enough for Lake's
20-way runs, so it becomes the held-out test alphabet), and 6 characters x 6 drawers of four more
alphabets; mini2 repeats Greek's first 6 x 6 drawings, as small2 repeats small1's Greek and Latin.
"""

import sys
import zipfile
from pathlib import Path

PICK = {  # zip -> [(source zip, alphabet, characters, drawers)]
    "mini1": [
        ("images_background_small1.zip", "Greek", 20, 20),
        ("images_background_small1.zip", "Balinese", 6, 6),
        ("images_background_small1.zip", "Korean", 6, 6),
    ],
    "mini2": [
        ("images_background_small1.zip", "Greek", 6, 6),
        ("images_background_small2.zip", "Sanskrit", 6, 6),
        ("images_background_small2.zip", "Tagalog", 6, 6),
    ],
}


def members(src: zipfile.ZipFile, alphabet: str, characters: int, drawers: int) -> list:
    """(character folder, file name, bytes) of the first ``characters`` x ``drawers`` drawings of ``alphabet``."""
    by_char = {}
    for name in sorted(src.namelist()):
        parts = name.split("/")
        if len(parts) == 4 and parts[1] == alphabet and parts[3].endswith(".png"):
            by_char.setdefault(parts[2], []).append(name)
    chars = sorted(by_char)[:characters]
    return [(c, n.rsplit("/", 1)[1], src.read(n)) for c in chars for n in by_char[c][:drawers]]


def main(source_dir: str) -> None:
    here = Path(__file__).resolve().parent
    for out, picks in PICK.items():
        with zipfile.ZipFile(here / f"{out}.zip", "w", zipfile.ZIP_STORED) as zf:
            for src_name, alphabet, characters, drawers in picks:
                with zipfile.ZipFile(Path(source_dir) / src_name) as src:
                    for char, file_name, data in members(src, alphabet, characters, drawers):
                        info = zipfile.ZipInfo(
                            f"images_background_{out}/{alphabet}/{char}/{file_name}",
                            date_time=(1980, 1, 1, 0, 0, 0),
                        )
                        zf.writestr(info, data)
        print(f"{out}.zip: {(here / f'{out}.zip').stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/omniglot")
