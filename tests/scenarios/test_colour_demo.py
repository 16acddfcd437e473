"""The colour demo (``scripts/demo_colour.py``, run by ``scripts/demo_colour.sh``) on the committed emoji fixture:
it teaches ``models/emoji`` the fixture's held-out concepts from Noto's drawings and asks Twemoji's and OpenMoji's;
the count it prints is its predictions' count, those are the runtime's own answers on the files it wrote, and the
contact sheet has the size of its layout (four concepts, the taught row and two asked rows)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from repo_paths import REPO

from metalite.runtime import FewShotClassifier

SCRIPT = REPO / "scripts" / "demo_colour.py"
# 150 px of row titles + 4 cells of 144 px + 12 px margin; 56 px of title + 3 rows of 142 px + 12 px margin
SHEET_SIZE = (738, 494)


def test_colour_demo_on_the_fixture_prints_what_it_predicted_and_draws_the_sheet(tmp_path):
    out = tmp_path / "demo"
    p = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=dict(os.environ, METALITE_CACHE=str(tmp_path / "cache")),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads((out / "predictions.json").read_text())
    assert sorted({r["truth"] for r in rows}) == [
        "carrot",
        "cherry blossom",
        "dog face",
        "red apple",
    ]
    assert sorted(r["artist"] for r in rows) == ["OpenMoji"] * 4 + ["Twemoji"] * 4
    assert all(r["right"] == (r["label"] == r["truth"]) and 0 < r["confidence"] <= 1 for r in rows)

    # what it prints is what it recorded: one line per query, then the count
    lines = [line for line in p.stdout.splitlines() if " -> " in line]
    assert [line.split()[0] for line in lines] == [r["artist"] for r in rows]
    assert all(
        f"{r['truth']} " in line and f"-> {r['label']} " in line for line, r in zip(lines, rows)
    )
    k, n = sum(r["right"] for r in rows), len(rows)
    m = re.search(r"held-out concepts: (\d+)/(\d+) right \((\d+)%\)", p.stdout)
    assert m and (int(m[1]), int(m[2]), int(m[3])) == (k, n, round(100 * k / n)), p.stdout
    # a colour bundle tells these apart across artists (7 of 8 measured): far above chance (2 of 8)
    assert k >= 6, p.stdout

    # the answers are the runtime's on the pictures written: taught from the support folder, asked the query files
    support = sorted((out / "support").glob("*/*.png"))
    assert len(support) == 4 and all(Image.open(s).mode == "RGB" for s in support)
    clf = FewShotClassifier(REPO / "models" / "emoji", delegate="cpu").fit(
        [str(s) for s in support], [s.parent.name for s in support]
    )
    assert clf.predict([r["image"] for r in rows]) == [r["label"] for r in rows]

    said = re.search(r"^contact sheet: (.+)$", p.stdout, re.M)
    assert said and Path(said[1]) == out / "contact_sheet.png"
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.mode == "RGB" and sheet.size == SHEET_SIZE
