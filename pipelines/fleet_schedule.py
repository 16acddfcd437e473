"""Scheduled ``metalite fleet update`` runs for ``metalite serve --update-every HOURS``.

Each run is a child process (``python -m metalite.tools.cli fleet update --root ROOT ...``), so TensorFlow
never loads into the server and a crashed update cannot take the server down; runs never overlap (the
next one waits for the previous to end), and an update that is still running when the server stops is
terminated (it resumes from its plan and checkpoints next time). A run is skipped when no labelled example
arrived since the last decided update (its ``last_seq`` in ``updates/last.json``): retraining on the same
data would only spend hours of CPU. One log line per decision; the whole
output of the last run is in ``ROOT/updates/scheduled.log``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path


def new_examples(root) -> tuple:
    """(labelled examples newer than those the last decided update used, seq of the newest example)."""
    from metalite.fleet import FleetRoot
    from metalite.fleet.examples import labelled_since, newest_seq

    try:
        used = int(
            json.loads((Path(root) / "updates" / "last.json").read_text()).get("last_seq") or 0
        )
    except (OSError, ValueError, TypeError):
        used = 0
    fleet = FleetRoot(root)
    return labelled_since(fleet, used), newest_seq(fleet)


class UpdateScheduler:
    """Run ``fleet update`` on ``root`` every ``every_s`` seconds (first run one period after ``start``).

    Args:
      root: the fleet root directory. every_s: period in seconds. args: extra ``fleet update`` options.
      say: where the one-line outcome of each run goes (the server log).
    """

    def __init__(self, root, every_s: float, args=(), say=print):
        if not every_s > 0:
            raise ValueError(f"the update period must be positive, got {every_s!r}")
        self.root, self.every_s, self.args, self.say = Path(root), float(every_s), list(args), say
        self.runs = 0
        self._stop = threading.Event()
        self._proc = None
        self._thread = threading.Thread(
            target=self._loop, name="fleet-update-scheduler", daemon=True
        )

    def start(self) -> UpdateScheduler:
        self.say(
            f"scheduled updates: every {self.every_s / 3600:g} h ({' '.join(self.args) or 'default options'})"
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop scheduling and terminate a running update (it resumes from its checkpoints next time)."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.say(f"scheduled update: {self.run_once()}")

    def run_once(self) -> str:
        """Run one update to its end (or skip it: nothing new to learn from); returns its outcome in one line."""
        new, newest = new_examples(self.root)
        if new == 0:
            return f"skipped: no labelled examples arrived since the last update (up to #{newest})"
        log = self.root / "updates" / "scheduled.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "metalite.tools.cli",
            "fleet",
            "update",
            "--root",
            str(self.root),
            *self.args,
        ]
        t0 = time.monotonic()
        with open(log, "wb") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            code = self._proc.wait()
        self.runs += 1
        lines = [l.strip() for l in log.read_text("utf-8", "replace").splitlines() if l.strip()]
        decision = next(
            (l for l in reversed(lines) if l.startswith(("published v", "kept v"))), None
        )
        if (
            code == 0 and decision
        ):  # "published vN (...) in S s" says its time; "kept vN: why" does not
            return (
                decision
                if decision.startswith("published")
                else f"{decision} ({time.monotonic() - t0:.0f} s)"
            )
        why = lines[-1] if lines else "no output"
        return f"failed (exit {code}): {why[:300]} (full output in {log})"
