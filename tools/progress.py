"""Progress of long commands on stderr: a bar on a terminal, a log line every few seconds otherwise.

``ConsoleProgress`` implements ``metalite.common.progress.Progress``. On a terminal each task is a
click progress bar with a status text; anywhere else (a CI log, ``2> file``) a task writes a line when it
starts, then at most every ``interval`` seconds and when it ends (``label: 120/300 (40%) loss 0.53 |
12 s, about 18 s left``), so a log never falls silent during a long step.
"""

from __future__ import annotations

import sys
import time

import click

from metalite.common.progress import Progress, Task

INTERVAL = 5.0  # seconds between log lines when stderr is not a terminal


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class _BarTask(Task):
    def __init__(self, owner, label, total, done):
        self.owner, self.status = owner, ""
        self.bar = click.progressbar(
            length=max(total, 1),
            label=label,
            file=owner.stream,
            show_pos=True,
            show_eta=True,
            item_show_func=lambda _: self.status,
        )
        self.bar.__enter__()
        self.bar.update(done)
        owner.active = self

    def advance(self, n=1, status=""):
        self.status = status
        self.bar.update(n)

    def close(self):
        if self.owner.active is self:
            self.bar.__exit__(None, None, None)
            self.owner.active = None


class _LogTask(Task):
    def __init__(self, owner, label, total, done):
        self.owner, self.label, self.total, self.done = owner, label, total, done
        self.t0 = time.monotonic()
        self.first = (
            None  # (time, done) after the first unit: warm-up (tracing, caches) is not the pace
        )
        self.last, self.status, self.closed = self.t0, "", False
        owner.log(f"{label}: {done}/{total}" + (" (resumed)" if done else ""))

    def advance(self, n=1, status=""):
        self.done += n
        self.status = status
        now = time.monotonic()
        if self.first is None:
            self.first = (now, self.done)
        if now - self.last >= self.owner.interval and self.done < self.total:
            self.last = now
            self.owner.log(self._line(now))

    def _line(self, now) -> str:
        elapsed, pct = now - self.t0, 100.0 * self.done / max(self.total, 1)
        t1, d1 = self.first or (now, self.done)
        rate = (self.done - d1) / (now - t1) if now > t1 else 0.0
        left = (
            f", about {_seconds((self.total - self.done) / rate)} left"
            if rate > 0 and self.done < self.total
            else ""
        )
        status = f" {self.status}" if self.status else ""
        return f"{self.label}: {self.done}/{self.total} ({pct:.0f}%){status} | {_seconds(elapsed)}{left}"

    def close(self):
        if not self.closed:
            self.closed = True
            self.owner.log(self._line(time.monotonic()))


class ConsoleProgress(Progress):
    """Progress on ``stream`` (stderr): bars when it is a terminal (``tty`` overrides), log lines otherwise."""

    def __init__(self, stream=None, tty: bool | None = None, interval: float = INTERVAL):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.active = None  # the bar being drawn, if any

    def log(self, message: str) -> None:
        if self.active is not None:  # clear the bar's line; it redraws on its next update
            self.stream.write("\r\033[K")
        click.echo(message, file=self.stream)

    def task(self, label: str, total: int, done: int = 0) -> Task:
        return (_BarTask if self.tty else _LogTask)(self, label, int(total), int(done))
