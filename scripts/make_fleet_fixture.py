"""Build tests/data/omniglot_heldout/ (the fleet end-to-end test's drawings) from Omniglot's background set.

    python scripts/make_fleet_fixture.py ../shared/data/omniglot/images_background.zip

Only alphabets of that zip's held-out test split (``datasets.HELDOUT_SPLIT``, split seed 0: what the shipped
``models/omniglot`` never trained on nor validated with) are taken, and the script checks it. The PNGs are
copied byte for byte in Omniglot's layout ``heldout/alphabet/characterNN/CCCC_DD.png`` (DD: who drew it), with
fixed zip timestamps, so a rebuild from the same zip is identical:

- ``devices.zip``: the first 12 characters of Arcadian, Early Aramaic and Sanskrit, all 20 drawers: what the
  test's devices are taught and what they correct;
- ``unseen.zip``: the first 20 characters of Hebrew, all 20 drawers: the alphabet no device sends, where
  ``fleet update`` checks for damage (20 characters, so it is the test split of
  ``omniglot:tests/data/omniglot/mini1.zip,unseen.zip``, and 20-way episodes fit).
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "omniglot_heldout"
PICK = {  # zip -> [(alphabet, characters)], every drawer of each character
    "devices.zip": [("Arcadian", 12), ("Early_Aramaic", 12), ("Sanskrit", 12)],
    "unseen.zip": [("Hebrew", 20)],
}


def members(src: zipfile.ZipFile, alphabet: str, characters: int) -> list:
    """(character folder, file name, bytes) of every drawing of the first ``characters`` characters of ``alphabet``."""
    by_char: dict = {}
    for name in sorted(src.namelist()):
        parts = name.split("/")
        if len(parts) == 4 and parts[1] == alphabet and parts[3].endswith(".png"):
            by_char.setdefault(parts[2], []).append(name)
    chars = sorted(by_char)[:characters]
    if len(chars) < characters:
        raise SystemExit(f"{alphabet}: {len(chars)} characters in the zip, {characters} wanted")
    return [(c, n.rsplit("/", 1)[1], src.read(n)) for c in chars for n in by_char[c]]


def check_held_out(source: Path) -> None:
    """Every picked alphabet is in the source's held-out test split (never trained or validated on)."""
    from metalite.training.datasets import HELDOUT_SPLIT, load_data

    held_out = set(load_data(f"omniglot:{source}", 28, HELDOUT_SPLIT).groups)
    picked = {a for picks in PICK.values() for a, _ in picks}
    if not picked <= held_out:
        raise SystemExit(
            f"not in the test split of {source}: {sorted(picked - held_out)} (it is {sorted(held_out)})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "source", type=Path, help="images_background.zip (Omniglot's 30 background alphabets)"
    )
    args = ap.parse_args()
    check_held_out(args.source)
    OUT.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(args.source) as src:
        for out, picks in PICK.items():
            with zipfile.ZipFile(OUT / out, "w", zipfile.ZIP_STORED) as zf:
                for alphabet, characters in picks:
                    for char, file_name, data in members(src, alphabet, characters):
                        zf.writestr(
                            zipfile.ZipInfo(
                                f"heldout/{alphabet}/{char}/{file_name}",
                                date_time=(1980, 1, 1, 0, 0, 0),
                            ),
                            data,
                        )
            print(f"{out}: {(OUT / out).stat().st_size} bytes")


if __name__ == "__main__":
    main()
