"""The README's commands are executable documentation: every shell line of the fenced ``bash`` blocks of its
Workstation, Device and Fleet sections runs here, through bash, in a fresh directory, as typed.

What is changed, and only where it must be (``SUBSTITUTIONS``): the Omniglot files become the committed
fixture (tests/data/omniglot), step and episode counts become small, the fleet's placeholders (host, token,
key, device home) become the real ones of a server started by the first ``serve`` line, and ``sync ...``
becomes the full ``sync`` line. Other sections may come and go: only the named ones are read. A line that
stops working, prints a traceback or lets the interpreter's INFO chatter through fails the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repo_paths import REPO

FIXTURE = REPO / "tests" / "data" / "omniglot"
SECTIONS = ("Workstation", "Device", "Fleet")  # headings starting with these words
SERVER_START_TIMEOUT = 120  # seconds; 2 shared, loaded cores
QUICK = {  # command -> options appended so it runs in seconds (the README's own options are kept)
    "compress": "--prune-steps 2 --qat-steps 2 --structured-steps 2 --episodes 2",
    "export": "--eval-episodes 3 --representative 20",
    "fleet update": "--steps 3 --replay 4 --prune-steps 2 --qat-steps 2 --episodes 10",
}
# Lines only parsed (options, types, files exist), not run: they take minutes, and another test runs them.
PARSED_ONLY = {
    "metalite bench": "tests/bench/test_bench.py runs bench --quick on the fixture (minutes)"
}
SUBSTITUTIONS = [  # (pattern, replacement) applied to each line before it runs
    (
        r"omniglot:images_background_small1\.zip",
        f"omniglot:{FIXTURE}/mini1.zip,{FIXTURE}/mini2.zip",
    ),
    (r"omniglot:images_background_small2\.zip", f"omniglot:{FIXTURE}/mini2.zip"),
    (r"--steps \d+", "--steps 3"),
    (
        r"--episodes \d+",
        "--episodes 3 --queries 5",
    ),  # the fixture's characters have 6 drawings each
    # the shipped glyph models replay the built-in glyphs (minutes to render on a fresh machine): the fleet runs
    # on the bundle and float model the Workstation lines just made from the fixture instead
    (r"models/glyphs --model models/float/glyphs", "runs/bundle --model runs/proto"),
]


# README blocks run elsewhere: the device-install lines need a Pi, so device_tests/test_pi_install.py runs them
# on the emulated one (scp and apt-get cannot run here)
RUN_ELSEWHERE = ("<!-- device-install:start", "<!-- device-install:end")


def readme_lines(text: str) -> list:
    """(section, line) for every shell line of the ``bash`` blocks in SECTIONS (continuations joined), except
    the blocks between RUN_ELSEWHERE's markers."""
    out, section, fenced, shell, elsewhere = [], None, False, False, False
    for raw in text.splitlines():
        if raw.strip().startswith(RUN_ELSEWHERE):
            elsewhere = raw.strip().startswith(RUN_ELSEWHERE[0])
        elif elsewhere:
            continue
        elif raw.startswith("## "):
            section = next((s for s in SECTIONS if raw[3:].startswith(s)), None)
        elif raw.startswith("```"):
            fenced = not fenced
            shell = fenced and raw.strip() == "```bash" and section is not None
        elif shell:
            if out and out[-1][1].endswith("\\"):
                out[-1] = (section, out[-1][1][:-1].rstrip() + " " + raw.strip())
            elif raw.strip() and not raw.lstrip().startswith("#"):
                out.append((section, raw.strip()))
    return out


def test_readme_lines_are_found():
    lines = readme_lines((REPO / "README.md").read_text())
    found = {s for s, _ in lines}
    assert found == set(SECTIONS), found  # a renamed section must be renamed here too
    cmds = [line for _, line in lines]
    assert any(c.startswith("metalite train") for c in cmds) and any(
        c.startswith("metalite serve") for c in cmds
    )
    assert all(not c.endswith("\\") for c in cmds)
    assert not any(
        c.startswith(("scp ", "sh metalite-device")) for c in cmds
    )  # the Pi's lines run on the emulated Pi


def test_the_readme_test_command_is_what_ci_runs_and_runs_everything():
    """The README's test line and .ci/run run the same pytest command, and it deselects nothing (--all)."""

    def pytest_commands(text):
        code = [line.split("#")[0].strip() for line in text.splitlines()]
        return [c[c.index("python -m pytest") :] for c in code if "python -m pytest" in c]

    readme_text = (REPO / "README.md").read_text().splitlines()
    readme = pytest_commands(
        "\n".join(line for line in readme_text if line.startswith("pip install"))
    )
    ci = pytest_commands((REPO / ".ci" / "run").read_text())
    assert len(ci) == 1 and readme == ci, (readme, ci)
    assert re.search(r"python -m pytest (.* )?--all\b", ci[0]), ci[0]


def _quick(line: str) -> str:
    for pat, rep in SUBSTITUTIONS:
        line = re.sub(pat, rep, line)
    code, sep, comment = line.partition(" #")
    for cmd, extra in QUICK.items():
        if re.match(rf"metalite {cmd}\b", code):
            code = f"{code.rstrip()} {extra}"
    return code + (sep + comment if sep else "")


def _support(d: Path) -> None:
    """support/<class>/*.png (3 classes of 5 drawings), query/*.png and x.png, real Omniglot drawings of Korean
    (a training alphabet of the fixture's split, so fleet update's no-damage check keeps Greek, its test split)."""
    import zipfile

    with zipfile.ZipFile(FIXTURE / "mini1.zip") as z:
        chars = {}
        for name in sorted(n for n in z.namelist() if n.endswith(".png") and "/Korean/" in n):
            chars.setdefault(name.rsplit("/", 2)[-2], []).append(name)
        for label, (_, files) in zip(("cat", "dog", "bird"), sorted(chars.items())):
            (d / "support" / label).mkdir(parents=True)
            for i, f in enumerate(files[:5]):
                (d / "support" / label / f"{i}.png").write_bytes(z.read(f))
            (d / "query").mkdir(exist_ok=True)
            (d / "query" / f"{label}.png").write_bytes(z.read(files[5]))  # a sixth drawer
        (d / "x.png").write_bytes((d / "query" / "cat.png").read_bytes())


class _Run:
    """Runs README lines through bash in ``work``; keeps the fleet's server, token and key for later lines."""

    def __init__(self, work: Path):
        self.work, self.servers, self.vars = work, [], {}
        bin_dir = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "HOME": str(work / "home"),
            "PYTHONUNBUFFERED": "1",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        (work / "home").mkdir()

    def expand(self, line: str) -> str:
        v = self.vars
        if "--pull-class" in line:  # "another device": a second home, enrolled for the purpose
            home, token = self.work / "device-2", v["token2"]
        else:
            home, token = self.work / "device", v.get("token", "TOKEN")
        full = f"metalite sync --server {v.get('url', '')} --token {token} --pubkey {v.get('key', '')} --home {home}"
        line = line.replace("metalite sync ...", full)
        line = line.replace("http://host:8765", v.get("url", "http://host:8765"))
        line = re.sub(r"--token TOKEN\b", f"--token {token}", line).replace(
            "--pubkey KEY", f"--pubkey {v.get('key')}"
        )
        return line.replace("/var/lib/metalite", str(home))

    def shell(self, line: str, timeout: int = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", line],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def serve(self, line: str) -> str:
        """A ``metalite serve`` line in the background on a free port; the text it printed up to serving."""
        log = self.work / f"serve-{len(self.servers)}.log"
        code = line.partition(" #")[0]
        with open(log, "wb") as err:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {code} --port 0"],
                cwd=self.work,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        self.servers.append(proc)
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            m = re.search(r"serving .* on (http://127\.0\.0\.1:\d+)", text)
            if m:
                self.vars.setdefault("url", m.group(1))
                self.vars.setdefault("key", re.search(r"public key: ([0-9a-f]{64})", text).group(1))
                return text
            assert proc.poll() is None, f"{line}\n{text[-2000:]}"
            time.sleep(0.2)
        raise AssertionError(
            f"{line}: no 'serving' line in {SERVER_START_TIMEOUT} s\n{log.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        for proc in self.servers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)


def _parse_only(cmd: str, cwd: Path) -> str:
    """Check a line as click would before running it: the command exists, its options and their values are
    valid, the paths it names exist (relative to ``cwd``)."""
    import shlex

    from metalite.tools.cli import main

    argv = shlex.split(cmd.partition(" #")[0])[1:]
    here = os.getcwd()
    os.chdir(cwd)
    try:
        ctx = main.make_context("metalite", list(argv))
        sub = main.get_command(ctx, argv[0])
        assert sub is not None, cmd
        sub.make_context(argv[0], argv[1:], parent=ctx)  # raises click's usage errors
        if "--data" in argv:
            from metalite.training.datasets import parse_spec

            parse_spec(argv[argv.index("--data") + 1])  # the files it names exist
    finally:
        os.chdir(here)
    return ""


@pytest.mark.slow
def test_every_readme_shell_line_runs(tmp_path):
    run = _Run(tmp_path)
    (tmp_path / "models").symlink_to(REPO / "models")
    _support(tmp_path)
    t0, timings = time.monotonic(), []
    try:
        for section, line in readme_lines((REPO / "README.md").read_text()):
            cmd = run.expand(_quick(line))
            t = time.monotonic()
            if any(cmd.startswith(c) for c in PARSED_ONLY):
                out = _parse_only(cmd, tmp_path)
            elif cmd.startswith("metalite serve"):
                text = run.serve(cmd)
                if (
                    len(run.servers) > 1
                ):  # a later serve line (scheduled updates): it starts; stop it again
                    os.killpg(run.servers[-1].pid, signal.SIGTERM)
                    run.servers[-1].wait(30)
                out = text
            else:
                res = run.shell(cmd)
                out = res.stdout + res.stderr
                assert res.returncode == 0, f"[{section}] {line}\nran: {cmd}\n{out[-3000:]}"
                if cmd.startswith("metalite fleet enroll"):
                    run.vars["token"] = res.stdout.strip().splitlines()[-1]
                    two = run.shell(cmd.replace("enroll pi-1", "enroll pi-2"))
                    run.vars["token2"] = two.stdout.strip().splitlines()[-1]
            timings.append((round(time.monotonic() - t, 1), line[:60]))
            assert "Traceback" not in out, f"[{section}] {line}\n{out[-3000:]}"
            if (
                "--verbose" not in cmd
            ):  # --verbose shows the interpreter's lines, as the README says
                assert not re.search(r"^INFO: ", out, re.M), (
                    f"[{section}] {line}: interpreter chatter\n{out[-2000:]}"
                )
    finally:
        run.stop()
    print(
        f"README lines: {len(timings)} in {time.monotonic() - t0:.0f} s; slowest {sorted(timings)[-3:]}"
    )
    assert (tmp_path / "runs" / "bundle" / "manifest.json").exists() and (
        tmp_path / "state.npz"
    ).exists()
    assert not (
        REPO / "fleet" / "signing_key.pem"
    ).exists()  # the example's root is outside the checkout
    assert (tmp_path / "home" / "metalite-fleet" / "signing_key.pem").exists()


@pytest.mark.parametrize(
    "bad",
    [
        "metalite train --data omniglot:images_background_small1.zip --no-such-option --out runs/x",
        "metalite evaluate models/omniglot --protocol lake",
        "metalite bench models/omniglot --quick --data omniglot:nowhere.zip --out runs/bench",
        "metalite bench models/omniglot --quick --no-such-option --out runs/bench",
    ],
)
def test_a_broken_line_fails(tmp_path, bad):
    """The runner is not a rubber stamp: a line that fails as typed fails here (run, or parsed only)."""
    run = _Run(tmp_path)
    (tmp_path / "models").symlink_to(REPO / "models")
    cmd = run.expand(_quick(bad))
    if any(cmd.startswith(c) for c in PARSED_ONLY):
        with pytest.raises(Exception):  # noqa: B017 -- any refusal of the parse is the point, whatever its type
            _parse_only(cmd, tmp_path)
        return
    res = run.shell(cmd, timeout=300)
    assert res.returncode != 0
