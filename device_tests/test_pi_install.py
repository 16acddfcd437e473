"""The README's "onto a Pi" lines, run one by one: ``metalite package`` on this machine, the folder copied into the
emulated arm64 bookworm root (where ``scp`` would put it), then Debian's apt, ``sh install.sh`` (venv, pip from
PyPI, checksums, ``device install``), ``device adapt`` and ``device predict`` inside it -- no PYTHONPATH, no
checkout in the root. The answers must match the x86 runtime's on the same files. The lines are read from
README.md, so a README line that stops working fails this test.

The root is a copy of the device tests' cached rootfs (``pi-rootfs-<key>``), so apt's packages do not leak into
the other tests; everything the lines install into it (venv, home, the folder, pip's cache) is removed first, so
each run installs the artifact cold. ``sudo`` is dropped from the lines: the emulated root runs as root and
minbase has no sudo. Where this machine reaches PyPI through a proxy with its own CA (``PIP_CERT``), that CA is
handed to pip in the root the same way. Measured: the folder's size and the time of each line, recorded as ``pi-install``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import envs
from devicekit import AGREEMENT, record

pytestmark = pytest.mark.device  # every test here needs a device environment

README = envs.REPO / "README.md"
BLOCK = re.compile(
    r"<!-- device-install:start -->\s*```bash\n(.*?)```\s*<!-- device-install:end -->", re.S
)
PI_HOME = "/root"  # the emulated device's user (root: minbase has no other)
LEFTOVERS = (
    "metalite",
    "metalite-home",
    "metalite-device",
    ".cache/pip",
    "support",
    "query",
    "x.png",
)


def readme_lines() -> dict:
    """{"workstation": [...], "pi": [...]}: the README's device-install block, split at its '# on the ...' lines."""
    m = BLOCK.search(README.read_text(encoding="utf-8"))
    assert m, (
        "README.md has no <!-- device-install:start --> ```bash ... ``` <!-- device-install:end --> block"
    )
    out, where = {"workstation": [], "pi": []}, None
    for line in m.group(1).splitlines():
        s = line.strip()
        if s.startswith("# on the workstation"):
            where = "workstation"
        elif s.startswith("# on the Pi"):
            where = "pi"
        elif s and not s.startswith("#"):
            assert where, (
                f"README device-install block: {s!r} comes before '# on the workstation' / '# on the Pi'"
            )
            out[where].append(s)
    assert out["workstation"] and out["pi"], out
    return out


@pytest.fixture(scope="session")
def pi_rootfs() -> Path:
    """A private copy of the arm64 rootfs for apt to install into (made once, ~400 MB, cp -a), without the
    runtime copies the other arm64 tests keep in /opt."""
    try:
        base = envs.arm64_rootfs()
    except envs.EnvError as e:
        pytest.fail(f"device test prerequisite missing: {e}", pytrace=False)
    root = base.parent / f"pi-rootfs-{base.name.split('-', 1)[1]}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        envs.log(f"copying {base.name} to {root.name} for the README install lines")
        envs.run(["cp", "-a", str(base), str(root)], what="cp -a rootfs", timeout=1200)
        (root / ".complete").write_text(base.name)
    for extra in (root / "opt").glob(
        "metalite-*"
    ):  # runtime copies, and the lock files kept beside them
        if extra.is_dir() and not extra.is_symlink():
            shutil.rmtree(extra)
        else:
            extra.unlink()
    return root


def _proxy_ca(rootfs: Path) -> dict:
    """This machine's PIP_CERT (a TLS-intercepting proxy's CA: the host's pip needs it too) for pip in the root.

    Not part of the README lines: on a Pi, pip reaches PyPI with its own certificates."""
    cert = os.environ.get("PIP_CERT")
    if not cert or not Path(cert).is_file():
        return {}
    inside = "/etc/ssl/host-pip-cert.pem"
    (rootfs / inside.lstrip("/")).parent.mkdir(
        parents=True, exist_ok=True
    )  # a minimal rootfs has no /etc/ssl yet
    shutil.copy2(cert, rootfs / inside.lstrip("/"))
    return {"PIP_CERT": inside}


def _run(argv, what: str, timeout: float = 1800) -> tuple:
    t = time.time()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, (
        f"{what} failed (exit {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    )
    return p, time.time() - t


def _x86_answers(bundle: Path, task: Path, queries: list) -> list:
    """(label, top-2 gap, probabilities by class) of each query from this machine's runtime, fit on the same folders."""
    from metalite.runtime import FewShotClassifier

    support = {
        d.name: sorted(map(str, d.glob("*.png"))) for d in sorted((task / "support").iterdir())
    }
    clf = FewShotClassifier(bundle).fit(support)
    proba = clf.predict_proba([str(task / q) for q in queries])
    rows = []
    for p in proba:
        top = sorted(p)[-2:]
        rows.append((clf.classes[int(p.argmax())], float(top[1] - top[0]), float(p.max())))
    return rows


def _small_task(task: Path, dst: Path, classes: int = 5, shots: int = 2, queries: int = 2) -> Path:
    """The first ``classes`` classes of ``task`` with ``shots`` support and ``queries`` query images each: emulated
    adaptation costs seconds per image (100 support images took 11 minutes), so the CI run stays short."""
    for part, n in (("support", shots), ("query", queries)):
        for d in sorted((task / part).iterdir())[:classes]:
            (dst / part / d.name).mkdir(parents=True)
            for f in sorted(d.glob("*.png"))[:n]:
                shutil.copy2(f, dst / part / d.name / f.name)
    return dst


def test_readme_device_lines_install_adapt_and_predict_on_the_emulated_pi(
    pi_rootfs, bundles, task, tmp_path, results_dir
):
    lines, rootfs = readme_lines(), pi_rootfs
    task = _small_task(task, tmp_path / "task")
    runner, mode = envs.arm64_runner(rootfs)
    for name in LEFTOVERS:
        p = rootfs / PI_HOME.lstrip("/") / name
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    pi_home = rootfs / PI_HOME.lstrip("/")
    assert (
        not list((rootfs / "opt").iterdir()) and not (pi_home / "setup.py").exists()
    )  # no checkout, no copies

    # the workstation: the README's lines in a folder where models/ is the repository's
    ws = tmp_path / "workstation"
    ws.mkdir()
    (ws / "models").symlink_to(envs.REPO / "models")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = (
        f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # this checkout's `metalite`
    )
    seconds, folder = {}, None
    for line in lines["workstation"]:
        argv = shlex.split(line, comments=True)
        if argv[0] == "scp":  # to the device: the emulated root's home is where scp would put it
            assert argv[1] == "-r" and argv[-1].endswith(":"), (
                f"README scp line not 'scp -r FOLDER host:': {line}"
            )
            folder = ws / argv[2]
            t = time.time()
            shutil.copytree(folder, pi_home / folder.name)
            seconds["copy"] = time.time() - t
            continue
        p = subprocess.run(
            ["sh", "-c", line], cwd=ws, env=env, capture_output=True, text=True, timeout=900
        )
        assert p.returncode == 0, (
            f"README line failed on the workstation: {line}\n{p.stdout[-2000:]}{p.stderr[-2000:]}"
        )
    assert folder is not None, "README device-install block has no scp line"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    # what the Pi user has next to the folder: support/<class>/*.png and x.png (from the Omniglot fixture)
    shutil.copytree(task / "support", pi_home / "support")
    shutil.copytree(task / "query", pi_home / "query")
    # the queries of each class for the comparison (emulated predict: seconds per image here)
    queries = sorted(str(q.relative_to(task)) for q in (task / "query").rglob("*.png"))
    shutil.copy2(task / queries[0], pi_home / "x.png")

    t_start = time.time() - seconds["copy"]
    outputs, pi_env = (
        [],
        {"HOME": PI_HOME, "DEBIAN_FRONTEND": "noninteractive", **_proxy_ca(rootfs)},
    )
    for line in lines["pi"]:
        cmd = re.sub(r"(^|&&\s*|;\s*)sudo\s+", r"\1", line)
        envs.log(f"emulated Pi: {cmd}")
        p, s = _run(
            runner(["sh", "-c", f"cd {PI_HOME} && {cmd}"], pi_env),
            f"README line on the emulated Pi ({mode}): {line}",
            timeout=3600,
        )
        seconds[line] = round(s, 1)
        envs.log(f"emulated Pi: done in {s:.0f} s")
        outputs.append(p.stdout)
    to_first_prediction = (
        time.time() - t_start - sum(v for k, v in seconds.items() if k.startswith("sudo apt"))
    )

    # the last README line predicted x.png; its label must be the x86 runtime's
    ref = _x86_answers(bundles["omniglot"], task, queries)
    assert outputs[-1].split("\t")[:2] == ["x.png", ref[0][0]], (outputs[-1], ref[0])

    # the same installed metalite on every query, against x86 (the agreement criterion of device_tests)
    metalite = f"{PI_HOME}/metalite/bin/metalite"
    probe = (
        "import sys, numpy, platform, metalite.runtime as r; "
        "print(sys.executable, numpy.__version__, numpy.__file__, r.__file__, platform.machine())"
    )
    p, _ = _run(runner([f"{PI_HOME}/metalite/bin/python", "-c", probe], pi_env), "probe")
    exe, numpy_version, numpy_file, runtime_file, machine = p.stdout.split()
    assert machine == "aarch64" and runtime_file.startswith(
        f"{PI_HOME}/metalite/lib/python3.11/site-packages/"
    )
    assert numpy_file.startswith("/usr/lib/python3/dist-packages/"), (
        numpy_file
    )  # Debian's, as install.sh keeps it
    p, predict_s = _run(
        runner(
            [
                "sh",
                "-c",
                f"cd {PI_HOME} && {metalite} device predict {' '.join(queries)} "
                f"--home {PI_HOME}/metalite-home --json",
            ],
            pi_env,
        ),
        "device predict on every query",
    )
    rows = json.loads(p.stdout)
    assert [r["image"] for r in rows] == queries
    flips = [
        (q, r["label"], ref_label, gap)
        for q, r, (ref_label, gap, _) in zip(queries, rows, ref)
        if r["label"] != ref_label
    ]
    agree = 1 - len(flips) / len(rows)
    assert all(gap <= AGREEMENT["flip_max_top2_gap"] for *_, gap in flips), flips
    assert agree >= AGREEMENT["labels_min_agreement"], flips
    conf = max(abs(r["confidence"] - c) for r, (_, _, c) in zip(rows, ref))
    assert conf <= AGREEMENT["proba_max_abs"], conf
    status = json.loads(
        _run(
            runner(
                [metalite, "device", "status", "--home", f"{PI_HOME}/metalite-home", "--json"],
                pi_env,
            ),
            "device status",
        )[0].stdout
    )
    assert status["version"] == 1 and len(status["classes"]) == len(
        list((task / "support").iterdir())
    )

    record(
        results_dir,
        "pi-install",
        {
            "label": "EMULATED (qemu-user, Cortex-A72 model, on x86): not a Pi timing",
            "mode": mode,
            "artifact_bytes": size,
            "artifact_files": sorted(
                str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file()
            ),
            "seconds_per_line": seconds,
            "seconds_copy_to_first_prediction_without_apt": round(to_first_prediction, 1),
            "numpy": f"{numpy_version} ({numpy_file})",
            "python": exe,
            "queries": len(rows),
            "labels_agree": agree,
            "confidence_max_abs": round(conf, 6),
            "predict_all_seconds": round(predict_s, 1),
        },
    )
