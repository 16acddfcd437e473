"""What a newcomer meets in the first hour: one line for a missing extra, fleet roots kept out of
git work trees, releases without the float backbone no device runs, counts in words."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fleetkit import Server
from repo_paths import REPO

GLYPHS = REPO / "models" / "glyphs"
FLOAT_GLYPHS = REPO / "models" / "float" / "glyphs"

# Runs the CLI with some packages made unimportable, as on an install without that extra.
WITHOUT = textwrap.dedent("""
    import sys
    for m in sys.argv[1].split(","):
        sys.modules[m] = None  # `import m` now raises ModuleNotFoundError, as when it is not installed
    from metalite.tools.cli import main
    sys.argv = ["metalite", *sys.argv[2:]]
    main()
""")


def _without(modules: str, *args, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, modules, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.parametrize(
    "modules, args, line",
    [
        (
            "tensorflow,tf_keras",
            ["train", "--data", "glyphs", "--steps", "2", "--out", "{tmp}/m"],
            "this command needs tensorflow: pip install 'metalite[train]'",
        ),
        (
            "tensorflow,tf_keras",
            ["compress", FLOAT_GLYPHS, "--out", "{tmp}/c"],
            "this command needs tensorflow: pip install 'metalite[train]'",
        ),
        (
            "tensorflow,tf_keras",
            ["export", FLOAT_GLYPHS, "--out", "{tmp}/b"],
            "this command needs tensorflow: pip install 'metalite[train]'",
        ),
        (
            "tensorflow,tf_keras",
            ["evaluate", FLOAT_GLYPHS, "--episodes", "2"],
            "this command needs tensorflow: pip install 'metalite[train]'",
        ),
        (
            "fastapi",
            ["serve", "--root", "{tmp}/root"],
            "this command needs fastapi: pip install 'metalite[serve]'",
        ),
        (
            "cryptography",
            ["fleet", "publish", GLYPHS, "--root", "{tmp}/root"],
            "this command needs cryptography: pip install 'metalite[serve]'",
        ),
        (
            "PIL",
            ["adapt", GLYPHS, "{tmp}/support", "--out", "{tmp}/s.npz"],
            "this command needs pillow: pip install 'metalite[images]'",
        ),
    ],
)
def test_a_missing_extra_is_the_same_one_line_for_every_command(tmp_path, modules, args, line):
    (tmp_path / "support" / "a").mkdir(parents=True)
    (tmp_path / "support" / "a" / "1.png").write_bytes(b"")
    res = _without(modules, *[str(a).replace("{tmp}", str(tmp_path)) for a in args])
    assert res.returncode == 1, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1] == f"Error: {line}", res.stderr[-2000:]
    assert "Traceback" not in res.stderr


def _git_init(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(d)], check=True)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command")
def test_no_fleet_root_is_created_where_git_add_would_commit_its_key(tmp_path):
    from metalite.fleet import FleetRoot
    from metalite.fleet.errors import FleetError
    from metalite.fleet.root import exposed_in_git

    repo = tmp_path / "checkout"
    _git_init(repo)
    for cmd in (
        ["fleet", "enroll", "pi-1"],
        ["fleet", "pubkey"],
        ["fleet", "publish", str(GLYPHS)],
        ["serve", "--port", "0"],
    ):
        res = subprocess.run(
            [sys.executable, "-m", "metalite.tools.cli", *cmd, "--root", "fleet/"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 1 and "inside the git work tree" in res.stderr, (cmd, res.stderr)
        assert not (repo / "fleet").exists(), cmd
    with pytest.raises(FleetError, match="e.g. ~/metalite-fleet"):
        FleetRoot(repo / "deeper" / "fleet", create=True)
    (repo / ".gitignore").write_text("/fleet/\n")  # ignored by git: allowed
    assert exposed_in_git(repo / "fleet") is None and exposed_in_git(tmp_path / "elsewhere") is None
    FleetRoot(repo / "fleet", create=True)
    (
        repo / ".gitignore"
    ).unlink()  # an existing root that git would now commit: serve says so, loudly
    assert exposed_in_git(repo / "fleet") == repo
    server = Server(repo / "fleet", tmp_path / "serve.log").start()
    try:
        assert "WARNING: " in (tmp_path / "serve.log").read_text()
    finally:
        server.stop()


def test_the_kit_s_gitignore_covers_what_it_writes():
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs a git checkout and the git command")
    written = [
        ".venv/bin/python",
        "venv/lib/x.py",
        "runs/proto/config.json",
        "state.npz",
        "a/signing_key.pem",
        "a/fleet.sqlite",
        "a/fleet.sqlite-wal",
        "metalite.egg-info/PKG-INFO",
        ".cache/x",
    ]
    res = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "--no-index", *written],
        capture_output=True,
        text=True,
    )
    assert sorted(res.stdout.split()) == sorted(written)


def test_publish_sends_devices_only_what_they_run(tmp_path):
    from metalite.fleet import FleetRoot, publish
    from metalite.fleet.releases import export_bundle
    from metalite.runtime import FewShotClassifier
    from metalite.runtime.bundle import open_bundle

    original = open_bundle(GLYPHS)
    float_file = original.manifest["backbone"]["float_file"]
    assert (
        float_file and float_file in original.files
    )  # the shipped bundle carries one, for `bench`
    fleet = FleetRoot(tmp_path / "root", create=True)
    r = publish(fleet, GLYPHS)
    assert r["left_out"] == [float_file]
    sent = sum(info["bytes"] for name, info in original.files.items() if name != float_file)
    assert (
        abs(r["bytes"] - sent - (GLYPHS / "manifest.json").stat().st_size) < 1024
    )  # the rest, manifest rewritten
    released = open_bundle(
        export_bundle(fleet, r["version"], tmp_path / "v1")
    )  # verifies every checksum
    assert released.manifest_sha256 == r["manifest_sha256"] != original.manifest_sha256
    assert float_file not in released.files and not (tmp_path / "v1" / float_file).exists()
    assert released.manifest["backbone"]["float_file"] is None
    assert {k: v for k, v in released.manifest.items() if k not in ("files", "backbone")} == {
        k: v for k, v in original.manifest.items() if k not in ("files", "backbone")
    }
    x = np.random.default_rng(0).integers(0, 255, (4, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(
        FewShotClassifier(tmp_path / "v1", delegate="cpu").embed(x),
        FewShotClassifier(GLYPHS, delegate="cpu").embed(x),
    )
    again = publish(
        fleet, tmp_path / "v1"
    )  # nothing left to leave out: the manifest is sent as it is
    assert again["left_out"] == [] and again["manifest_sha256"] == r["manifest_sha256"]


def test_counts_are_words():
    from metalite.runtime.plural import plural

    assert [plural(n, "class") for n in (0, 1, 2)] == ["0 classes", "1 class", "2 classes"]
    assert (
        plural(1, "unsure prediction") == "1 unsure prediction" and plural(3, "image") == "3 images"
    )


def _photo_folder(root: Path, classes: int = 6, per_class: int = 6) -> Path:
    """Colour crops of a real photograph (matplotlib's sample grace_hopper.jpg), 120 px: photo-like data."""
    import matplotlib
    from PIL import Image

    photo = Image.open(
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    ).convert("RGB")
    w, h = photo.size
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            x, y = rng.integers(0, w // 2), rng.integers(0, h // 2)
            photo.crop((x, y, x + w // 2, y + h // 2)).resize((120, 120)).save(
                root / f"c{c}" / f"{i}.jpg"
            )
    return root


def _ink_folder(root: Path, classes: int) -> Path:
    """Real Omniglot drawings (the fixture's Greek characters), one folder per character."""
    import zipfile

    with zipfile.ZipFile(REPO / "tests" / "data" / "omniglot" / "mini1.zip") as z:
        names = sorted(n for n in z.namelist() if n.endswith(".png") and "/Greek/" in n)
        chars = sorted({n.rsplit("/", 2)[-2] for n in names})[:classes]
        for ch in chars:
            (root / ch).mkdir(parents=True)
            for n in [n for n in names if f"/{ch}/" in n][:6]:
                (root / ch / n.rsplit("/", 1)[-1]).write_bytes(z.read(n))
    return root


def test_folder_data_gets_the_augmentation_that_fits_it(tmp_path):
    from metalite.training.augment import DEFAULT, NONE
    from metalite.training.datakind import survey
    from metalite.training.settings import resolve

    photos, ink = _photo_folder(tmp_path / "photos"), _ink_folder(tmp_path / "ink", 6)
    p, i = survey(photos), survey(ink)
    assert (p.kind, i.kind) == ("photo", "ink") and p.colour == 1.0 and i.colour == 0.0
    assert p.side == 120 and any("colour is dropped" in w for w in p.warnings(28, channels=1))
    assert not any(
        "colour" in w for w in p.warnings(28)
    )  # colour images train a colour model by default
    assert (
        any("lost" in w for w in p.warnings(28)) and i.warnings(28) == []
    )  # 105 px drawings: not "much larger"
    assert resolve("o", {"data": f"folder:{photos}"})["augment"] == NONE
    assert resolve("o", {"data": f"folder:{ink}"})["augment"] == DEFAULT
    assert resolve("o", {"data": f"folder:{photos}", "augment": {"shift": 1.0}})["augment"] == {
        "shift": 1.0
    }
    assert resolve("o", {"data": "glyphs"})["augment"] == DEFAULT
    # the CLI says what it picked and warns, then trains (TensorFlow missing here: it gets that far)
    res = _without(
        "tensorflow,tf_keras",
        "train",
        "--data",
        f"folder:{photos}",
        "--ways",
        "3",
        "--queries",
        "2",
        "--out",
        tmp_path / "m",
        "--channels",
        "1",
    )
    assert (
        "photos (36 images sampled, median 120 px): training with no augmentation" in res.stderr
    ), res.stderr
    assert (
        "warning: 100% of the sampled images are in colour" in res.stderr
    )  # --channels 1 drops it
    assert res.stderr.strip().endswith(
        "this command needs tensorflow: pip install 'metalite[train]'"
    )


@pytest.mark.parametrize(
    "classes, args, message",
    [
        (
            3,
            [],
            "1 validation class (of 1) with 2 images or more; 2-way validation episodes need 2",
        ),
        (
            5,
            ["--ways", "4"],
            "3 training classes (of 3) with at least 6 images (--shots 1 + --queries 5), fewer than "
            "--ways 4",
        ),
        (
            5,
            ["--queries", "9"],
            "0 training classes (of 3) with at least 10 images (--shots 1 + --queries 9), fewer than "
            "the 2 an episode needs",
        ),
    ],
)
def test_a_folder_too_small_for_its_episodes_fails_before_any_work(
    tmp_path, classes, args, message
):
    ink = _ink_folder(tmp_path / "ink", classes)
    res = _without(
        "tensorflow,tf_keras", "train", "--data", f"folder:{ink}", *args, "--out", tmp_path / "m"
    )
    assert res.returncode == 1 and message in res.stderr, (
        res.stderr
    )  # not the TensorFlow line: checked first
    if (
        "--ways" not in args
    ):  # too few classes, not too many ways: say how many a folder needs and the other layout
        assert "4 classes at least (2 of them validate), or train/ and val/ folders" in res.stderr
    for split in (
        "train",
        "val",
    ):  # the train/ + val/ layout it points to works with as few classes
        _ink_folder(tmp_path / "split" / split, 2)
    res = _without(
        "tensorflow,tf_keras",
        "train",
        "--data",
        f"folder:{tmp_path / 'split'}",
        "--queries",
        "4",
        "--out",
        tmp_path / "m",
    )
    assert res.stderr.strip().endswith(
        "this command needs tensorflow: pip install 'metalite[train]'"
    ), res.stderr


def test_folder_counts_agree_with_the_loaded_splits(tmp_path):
    from metalite.training.datasets import folder_counts, load_data

    ink = _ink_folder(tmp_path / "ink", 9)
    for split in ("train", "val", "test", "all"):
        spec = f"folder:{ink}"
        assert sorted(folder_counts(spec, split)) == sorted(load_data(spec, 28, split).counts()), (
            split
        )
    assert (
        len(folder_counts(f"folder:{ink}", "val")) == 2
    )  # 15% of 9 rounds to 1; validation needs 2


def test_bench_report_names_the_training_data_and_says_held_out_only_when_it_is():
    from metalite.bench.report import markdown

    report = json.loads((REPO / "benchmarks" / "reference" / "report.json").read_text())
    report["bundle"]["training"]["data"] = "omniglot:images_background_small1.zip"
    report["accuracy"].update(
        data="omniglot:/d/images_background_small2.zip",
        heldout=False,
        data_name="omniglot (images_background_small2)",
        training_data="omniglot:images_background_small1.zip",
    )
    text = markdown(report)
    assert (
        "trained (protonet) on omniglot (images_background_small1), measured on omniglot "
        "(images_background_small2)" in text
    )
    assert (
        "not the training data (omniglot (images_background_small1)), so not necessarily unseen"
        in text
    )
    assert "held-out `test`" not in text
    report["accuracy"].update(heldout=True, data_name="omniglot (images_background_small1)")
    assert "held-out `test` classes of omniglot (images_background_small1)" in markdown(report)


def test_compression_tables_say_the_compressed_stages_trained_longer():
    from metalite.export.inspect import _compression_lines
    from metalite.training.compress import format_report

    acc = {"5way1shot": {"mean": 0.9, "ci95": 0.01}}
    report = {
        "layers": [],
        "totals": {"pruned_zeros": 0, "pruned_weights": 1, "pruned_sparsity": 0.5, "sparsity": 0.4},
        "stages": {"float": acc, "pqat": {"5way1shot": {"mean": 0.95, "ci95": 0.01}}},
        "steps": {"structured": 0, "prune": 300, "qat": 150},
    }
    text = format_report(report)
    assert "(+5.0)" in text and "every later stage had 450 more fine-tuning episodes" in text
    assert "a gain is that extra training, not compression" in text
    lines = "\n".join(
        _compression_lines(
            {
                "stage": "pqat",
                "sparsity": 0.5,
                "pqat": True,
                "steps": report["steps"],
                "stages": report["stages"],
            }
        )
    )
    assert "450 more fine-tuning episodes than the float model" in lines


def test_the_shipped_glyph_bundle_ships_the_float_model_it_was_made_from():
    """What `fleet publish models/glyphs --model models/float/glyphs` (the README's fleet example) needs."""
    cfg = json.loads((FLOAT_GLYPHS / "config.json").read_text())
    manifest = json.loads((GLYPHS / "manifest.json").read_text())
    assert (
        cfg["format"] == "metalite-model"
        and cfg.get("stage", "float") == "float"
        and cfg["data"] == "glyphs"
    )
    assert {
        k: manifest["training"][k] for k in ("algorithm", "data", "backbone", "seed", "steps")
    } == {
        "algorithm": cfg["algorithm"],
        "data": cfg["data"],
        "backbone": cfg["backbone"],
        "seed": cfg["seed"],
        "steps": cfg["train"]["steps"],
    }
    assert sorted(p.name for p in FLOAT_GLYPHS.iterdir()) == [
        "backbone.weights.h5",
        "config.json",
        "head.npz",
    ]
