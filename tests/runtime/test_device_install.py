"""A device home from a bundle on disk, no fleet: ``metalite device install`` (``install_bundle``), then
``device adapt`` / ``device predict`` on the shipped Omniglot bundles with real Omniglot drawings (the fixture)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from runtime_kit import REPO, assert_one_line, rehash

from metalite.common.progress import Progress
from metalite.runtime import BundleError, FewShotClassifier
from metalite.runtime import head as headlib
from metalite.runtime.sync import DeviceHome, SyncError, UpdateRefusedError, install_bundle
from metalite.tools.cli import main

OMNIGLOT, FAST = REPO / "models" / "omniglot", REPO / "models" / "omniglot-fast"
FIXTURE = REPO / "tests" / "data" / "omniglot" / "mini1.zip"
WAYS, SHOTS, QUERIES = 5, 2, 3


class Lines(Progress):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> dict:
    """support/<character>/*.png (2 drawings each) and query/*.png (3 more each) of 5 Greek characters."""
    d = tmp_path_factory.mktemp("greek")
    with zipfile.ZipFile(FIXTURE) as z:
        names = sorted(n for n in z.namelist() if "/Greek/" in n and n.endswith(".png"))
        chars = sorted({n.split("/")[-2] for n in names})[:WAYS]
        truth = {}
        for c in chars:
            files = [n for n in names if n.split("/")[-2] == c][: SHOTS + QUERIES]
            for i, n in enumerate(files):
                p = d / ("support" / Path(c) if i < SHOTS else "query") / (f"{c}-{Path(n).name}")
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(z.read(n))
                if i >= SHOTS:
                    truth[p.name] = c
    queries = sorted((d / "query").glob("*.png"))
    return {"support": d / "support", "queries": queries, "truth": [truth[q.name] for q in queries]}


def _cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def _reference(bundle: Path, task: dict) -> list:
    """What the x86 runtime itself answers: FewShotClassifier on the bundle, fit on the same support folders."""
    support = {c.name: sorted(map(str, c.glob("*.png"))) for c in sorted(task["support"].iterdir())}
    return list(FewShotClassifier(bundle).fit(support).predict([str(q) for q in task["queries"]]))


def _predict(home: Path, task: dict) -> list:
    r = _cli("device", "predict", *task["queries"], "--home", home, "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [Path(x["image"]).name for x in rows] == [q.name for q in task["queries"]]
    return [x["label"] for x in rows]


def test_install_adapt_predict_then_a_newer_bundle_keeps_the_classes(task, tmp_path):
    home = tmp_path / "home"
    r = _cli("device", "install", OMNIGLOT, "--home", home)
    assert r.exit_code == 0 and "v1 running" in r.stdout, r.output
    assert "copying" in r.stderr  # progress lines on stderr
    installed = json.loads((home / "versions" / "1" / "installed.json").read_text())
    assert installed["manifest_sha256"] == DeviceHome(home).current()["manifest_sha256"]
    r = _cli("device", "adapt", task["support"], "--home", home)
    assert r.exit_code == 0 and f"{WAYS} classes learned" in r.stdout, r.output
    got = _predict(home, task)
    assert got == _reference(OMNIGLOT, task)
    assert np.mean(np.array(got) == np.array(task["truth"])) >= 0.8, (
        got,
        task["truth"],
    )  # a trained model

    again = _cli(
        "device", "install", OMNIGLOT, "--home", home
    )  # the running bundle: nothing changes
    assert (
        again.exit_code == 0 and "v1 running" in again.stdout and "nothing to do" in again.stderr
    ), again.output
    assert DeviceHome(home).version == 1

    r = _cli(
        "device", "install", FAST, "--home", home
    )  # another backbone: the classes are re-embedded
    assert r.exit_code == 0 and "v2 running" in r.stdout, r.output
    assert "health check" in r.stderr, r.stderr
    status = json.loads(_cli("device", "status", "--home", home, "--json").stdout)
    assert status["version"] == 2 and status["previous"] == 1 and len(status["classes"]) == WAYS
    assert status["support_images"] == WAYS * SHOTS
    assert _predict(home, task) == _reference(FAST, task)
    assert sorted(p.name for p in (home / "versions").iterdir()) == [
        "1",
        "2",
    ]  # the previous one is kept


def test_install_bundle_api_counts_versions_and_reports_progress(tmp_path):
    home, lines = DeviceHome(tmp_path / "home"), Lines()
    assert install_bundle(home, OMNIGLOT, lines) == 1
    assert install_bundle(home, FAST, lines) == 2  # no classes yet: nothing to carry
    assert (
        install_bundle(home, OMNIGLOT, lines) == 3
    )  # back to the first bundle is a new version, not v1
    assert any("v3 installed" in x for x in lines.lines), lines.lines
    assert home.current()["previous"] == 2 and not list(home.tmp.iterdir())
    with home.sync_lock():  # one install or sync at a time
        with pytest.raises(SyncError) as e:
            install_bundle(home, FAST)
    assert_one_line(e.value, SyncError)


def test_a_corrupt_bundle_or_a_failing_health_check_changes_nothing(task, tmp_path):
    home = tmp_path / "home"
    assert _cli("device", "install", OMNIGLOT, "--home", home).exit_code == 0
    assert _cli("device", "adapt", task["support"], "--home", home).exit_code == 0
    before = {
        p: p.read_bytes() for p in home.rglob("*") if p.is_file() and "outbox.sqlite" not in p.name
    }

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in OMNIGLOT.iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    data = bytearray((corrupt / "head.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "head.npz").write_bytes(bytes(data))
    r = _cli("device", "install", corrupt, "--home", home)
    assert r.exit_code == 1 and "head.npz" in r.output and "sha256" in r.output, r.output
    with pytest.raises(BundleError) as e:
        install_bundle(home, corrupt)
    assert_one_line(e.value, BundleError)

    useless = tmp_path / "useless"  # verifies, but its head maps every embedding to one point
    useless.mkdir()
    for f in FAST.iterdir():
        (useless / f.name).write_bytes(f.read_bytes())
    spec = headlib.load_head(useless / "head.npz")
    spec.weights = [(np.zeros_like(w), np.zeros_like(b)) for w, b in spec.weights]
    headlib.save_head(spec, str(useless / "head.npz"))
    rehash(useless)
    r = _cli("device", "install", useless, "--home", home)
    assert r.exit_code == 3 and "health check failed" in r.output, r.output
    with pytest.raises(UpdateRefusedError) as e:
        install_bundle(home, useless)
    assert_one_line(e.value, UpdateRefusedError)

    after = {
        p: p.read_bytes() for p in home.rglob("*") if p.is_file() and "outbox.sqlite" not in p.name
    }
    assert after == before and not list((home / "tmp").iterdir())
    assert _predict(home, task) == _reference(OMNIGLOT, task)


def test_device_commands_say_how_to_fill_an_empty_home(tmp_path):
    r = _cli("device", "predict", REPO / "README.md", "--home", tmp_path / "empty")
    assert r.exit_code == 1 and "metalite device install BUNDLE" in r.output, r.output
    r = _cli("device", "install", tmp_path / "nothing", "--home", tmp_path / "h")
    assert r.exit_code == 2 and "does not exist" in r.output, r.output


def test_the_home_records_its_format_and_refuses_a_newer_one(tmp_path):
    home = DeviceHome(tmp_path / "home")
    install_bundle(home, OMNIGLOT)
    cur = json.loads((home.root / "current.json").read_text())
    assert (cur["format"], cur["format_version"], cur["version"]) == ("metalite-home", 1, 1)
    (home.root / "current.json").write_text(json.dumps({**cur, "format_version": 2}))
    with pytest.raises(SyncError) as e:
        _ = home.version  # reading the property is what must raise
    assert_one_line(e.value, SyncError)
    assert "upgrade metalite" in str(e.value)
    (home.root / "current.json").write_text(
        json.dumps({"version": 1})
    )  # as metalite 0.1.0 wrote it: format 1
    assert home.version == 1


def test_versions_doc_matches_the_code():
    """docs/versions.md's row of this release says what the code's format constants read and write."""
    import re

    from metalite.export.bundle import BUNDLE_FORMAT_VERSION
    from metalite.fleet.db import SCHEMA_VERSION
    from metalite.runtime import bundle, state
    from metalite.runtime.head import HEAD_FORMAT_VERSION
    from metalite.runtime.sync.home import HOME_FORMAT_VERSION
    from metalite.runtime.sync.release import RELEASE_FORMAT_VERSION
    from metalite.runtime.version import __version__
    from metalite.training.modeldir import MODEL_FORMAT_VERSION

    text = (REPO / "docs" / "versions.md").read_text()
    row = re.search(rf"^\| {re.escape(__version__)} \|(.+)\|$", text, re.M)
    assert row, f"docs/versions.md has no row for {__version__}"
    cells = [c.strip() for c in row.group(1).split("|")]

    def says(reads, writes):
        return f"reads {', '.join(map(str, reads))}, writes {writes}"

    assert cells == [
        says(bundle.BUNDLE_FORMAT_VERSIONS, BUNDLE_FORMAT_VERSION),
        says([HEAD_FORMAT_VERSION], HEAD_FORMAT_VERSION),
        says(state.STATE_FORMAT_VERSIONS, state.STATE_FORMAT_VERSION)
        + f" (gray), {state.COLOR_STATE_FORMAT_VERSION} (colour)",
        says([HOME_FORMAT_VERSION], HOME_FORMAT_VERSION),
        says([RELEASE_FORMAT_VERSION], RELEASE_FORMAT_VERSION),
        says(range(1, SCHEMA_VERSION + 1), SCHEMA_VERSION),
        says([MODEL_FORMAT_VERSION], MODEL_FORMAT_VERSION),
    ]
    assert f"## {__version__}" in (REPO / "CHANGELOG.md").read_text()
