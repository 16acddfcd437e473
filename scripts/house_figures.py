"""Figures of the house: files per folder, the files two commands run through, the longest function and module.

    python scripts/house_figures.py            # static figures only (a second)
    python scripts/house_figures.py --paths    # also trace `metalite adapt` and `metalite fleet update` (minutes)

"Files on a path" are the product files whose functions run while the command runs (``sys.setprofile`` on
every thread, started after the CLI is imported): what a reader following the call opens. ``adapt`` teaches
``models/omniglot`` two classes of the Omniglot fixture; ``fleet update`` fine-tunes a tiny model trained here
on the fixture (20 episodes) on Korean drawings a device sent, with the quickest gate the options allow.
"""

from __future__ import annotations

import argparse
import ast
import base64
import os
import re
import sys
import tempfile
import threading
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("common", "runtime", "export", "training", "fleet", "pipelines", "bench", "tools")
FIXTURE = REPO / "tests" / "data" / "omniglot"


def product_files() -> dict:
    return {f: sorted((REPO / f).rglob("*.py")) for f in FOLDERS if (REPO / f).is_dir()}


def per_folder() -> list:
    rows, total = [], 0
    for folder, files in product_files().items():
        lines = sum(len(p.read_text().splitlines()) for p in files)
        bench = [p for p in files if p.name.startswith("bench")]
        rows.append((folder, len(files), lines, len(bench)))
        total += len(files)
    return rows, total


def longest() -> tuple:
    """(longest function as (lines, where), longest module as (lines, path))."""
    best_fn, best_mod = (0, ""), (0, "")
    for files in product_files().values():
        for p in files:
            text = p.read_text()
            rel = p.relative_to(REPO).as_posix()
            best_mod = max(best_mod, (len(text.splitlines()), rel))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    best_fn = max(best_fn, (n, f"{rel}:{node.lineno} {node.name}"))
    return best_fn, best_mod


# concept -> a pattern whose every hit in product code is one place that implements it
CONCEPTS = {
    "image-extension lists": r"^[ \t]*[A-Z_]*(EXTENSIONS|SUFFIXES)[ \t]*=",
    "class-folder readers": r"for d in sorted\(p for p in [a-z_]+\.iterdir\(\) if p\.is_dir\(\)",
    "inline SQLite transactions": r"execute\(\"BEGIN IMMEDIATE\"\)",
    "flock call sites": r"fcntl\.flock\(",
    "venv builders": r"venv\.EnvBuilder\(",
    "hand-rolled atomic renames": r"\.replace\(work|tmp\.replace\(|os\.replace\(tmp",
}


def wire_functions() -> list:
    """Functions that base64-encode or -decode image pixels for the fleet wire (the device page's own data
    URLs and thumbnails, in runtime/webui, are another format)."""
    hits = []
    for files in product_files().values():
        for p in files:
            rel = p.relative_to(REPO).as_posix()
            if rel.startswith("runtime/webui/"):
                continue
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                    isinstance(n, ast.Attribute) and n.attr in ("b64encode", "b64decode")
                    for n in ast.walk(node)
                ):
                    hits.append(f"{rel}:{node.lineno} {node.name}")
    return hits


def concept_hits() -> dict:
    """Every hit of each pattern in product code and in the device tests' environment builders."""
    out, files_of = (
        {"wire image encoders/decoders": wire_functions()},
        {**product_files(), "device_tests": [REPO / "device_tests" / "envs.py"]},
    )
    for name, pattern in CONCEPTS.items():
        rx, hits = re.compile(pattern, re.M), []
        for files in files_of.values():
            for p in files:
                for m in rx.finditer(p.read_text()):
                    hits.append(
                        f"{p.relative_to(REPO).as_posix()}:{p.read_text()[: m.start()].count(chr(10)) + 1}"
                    )
        out[name] = hits
    return out


class Trace:
    """Product files whose functions run inside the ``with`` block, on any thread."""

    def __init__(self):
        self.files, self._seen = set(), set()
        self._roots = tuple(str(REPO.resolve() / f) + os.sep for f in FOLDERS)

    def _profile(self, frame, event, arg):
        if event == "call" and frame.f_code.co_filename not in self._seen:
            name = frame.f_code.co_filename
            self._seen.add(name)
            real = os.path.realpath(
                name
            )  # an installed copy may reach the checkout through symlinks
            if real.startswith(self._roots):
                self.files.add(Path(real).relative_to(REPO.resolve()).as_posix())

    def __enter__(self):
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)
        threading.setprofile(None)


def _fixture_images(zip_name: str, alphabet: str, characters: int, per: int) -> dict:
    """{character folder: [png bytes]} of one alphabet of a fixture zip."""
    out = {}
    with zipfile.ZipFile(FIXTURE / zip_name) as z:
        for name in sorted(z.namelist()):
            parts = name.split("/")
            if len(parts) >= 3 and parts[-3] == alphabet and name.endswith(".png"):
                out.setdefault(parts[-2], []).append(z.read(name))
    return {c: v[:per] for c, v in list(out.items())[:characters]}


def _run(main, args) -> None:
    from click.testing import CliRunner

    r = CliRunner().invoke(main, [str(a) for a in args])
    if r.exit_code != 0:
        raise SystemExit(f"metalite {' '.join(map(str, args))} failed: {r.output}{r.exception!r}")


def trace_adapt(tmp: Path, main) -> set:
    support = tmp / "support"
    for c, pngs in _fixture_images("mini1.zip", "Greek", 2, 2).items():
        (support / c).mkdir(parents=True)
        for i, png in enumerate(pngs):
            (support / c / f"{i}.png").write_bytes(png)
    with Trace() as t:
        _run(
            main,
            [
                "adapt",
                REPO / "models" / "omniglot",
                support,
                "--out",
                tmp / "state.npz",
                "--delegate",
                "cpu",
            ],
        )
    return t.files


def trace_fleet_update(tmp: Path, main) -> set:
    import io

    import numpy as np
    from PIL import Image

    from metalite.fleet import FleetRoot, enroll, publish
    from metalite.fleet.examples import ingest
    from metalite.training.trainer import train

    data = f"omniglot:{FIXTURE / 'mini1.zip'},{FIXTURE / 'mini2.zip'}"
    tiny = {
        "data": data,
        "backbone": {"kind": "conv4", "filters": 8, "embedding_dim": 16},
        "head": {"hidden": [16], "activation": "linear"},
        "ways": 5,
        "queries": 3,
        "steps": 20,
        "val_every": 20,
        "val_episodes": 10,
        "checkpoint_every": 20,
    }
    train(tmp / "model", tiny, log=lambda m: None)
    _run(main, ["export", tmp / "model", "--out", tmp / "bundle"])
    fleet = FleetRoot(tmp / "root", create=True)
    publish(fleet, tmp / "bundle", model_dir=tmp / "model")
    enroll(fleet, "pi")
    dev = fleet.db().execute("SELECT id FROM devices WHERE name = 'pi'").fetchone()["id"]
    batch = []
    for c, pngs in _fixture_images("mini1.zip", "Korean", 3, 6).items():
        for i, png in enumerate(pngs):
            img = Image.open(io.BytesIO(png)).convert("L").resize((28, 28), Image.BOX)
            px = np.asarray(img, np.uint8)
            batch.append(
                {
                    "id": f"ex-{c}-{i:02d}",
                    "kind": "support",
                    "label": c,
                    "height": 28,
                    "width": 28,
                    "pixels": base64.b64encode(px.tobytes()).decode(),
                }
            )
    ingest(fleet, dev, batch)
    with Trace() as t:
        _run(
            main,
            [
                "fleet",
                "update",
                "--root",
                tmp / "root",
                "--steps",
                "2",
                "--replay",
                "2",
                "--ways",
                "3",
                "--episodes",
                "10",
                "--unseen-classes",
                "10",
                "--max-drop",
                "1",
            ],
        )
    return t.files


def _by_folder(files: set) -> str:
    counts = {}
    for f in files:
        counts[f.split("/")[0]] = counts.get(f.split("/")[0], 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--paths", action="store_true", help="trace metalite adapt and metalite fleet update"
    )
    ap.add_argument("--list", action="store_true", help="list the files and the concept hits")
    a = ap.parse_args(argv)
    rows, total = per_folder()
    print(f"product files: {total}")
    for folder, n, lines, bench in rows:
        print(
            f"  {folder:10s} {n:3d} files {lines:6d} lines"
            + (f" ({bench} bench*.py)" if bench else "")
        )
    fn, mod = longest()
    print(f"longest function: {fn[0]} lines ({fn[1]}); longest module: {mod[0]} lines ({mod[1]})")
    for name, hits in concept_hits().items():
        print(f"{name}: {len(hits)}" + (f"  [{', '.join(hits)}]" if a.list else ""))
    if a.paths:
        from metalite.tools.cli import main as cli

        with tempfile.TemporaryDirectory() as td:
            for name, fn_ in (("adapt", trace_adapt), ("fleet update", trace_fleet_update)):
                (Path(td) / name).mkdir()
                files = fn_(Path(td) / name, cli)
                print(
                    f"metalite {name}: {len(files)} files ({_by_folder(files)})"
                    + (f"\n    {' '.join(sorted(files))}" if a.list else "")
                )


if __name__ == "__main__":
    main()
