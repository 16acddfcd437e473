"""How slow work in any part of metalite reports progress without knowing how it is shown.

Code that takes a while accepts a ``Progress`` and calls ``progress.log(line)`` for news, and
``with progress.task(label, total) as task: task.advance(n, status)`` for counted work. This base class
shows nothing: library callers get silence unless they pass a display (the CLI passes
``metalite.tools.progress.ConsoleProgress``), and ``as_progress`` turns None/False into it. It lives in
``metalite.common`` because every other part, the runtime included, may import that.
"""

from __future__ import annotations


class Task:
    """A counted piece of work: ``advance`` after each unit, ``close`` (or leave the ``with``) at the end."""

    def advance(self, n: int = 1, status: str = "") -> None:
        """``n`` more units done; ``status`` a short text about the latest state (loss, accuracy, ...)."""

    def close(self) -> None:
        """The work ended (finished, failed or interrupted)."""

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


class Progress:
    """The silent display; ``metalite.tools.progress.ConsoleProgress`` draws bars or writes log lines."""

    def log(self, message: str) -> None:
        """One line of news (a validation result, a saved checkpoint)."""

    def task(self, label: str, total: int, done: int = 0) -> Task:
        """Start counted work of ``total`` units, ``done`` of them already done (a resumed run)."""
        return Task()


SILENT = Progress()


def as_progress(progress) -> Progress:
    """``progress`` itself, or the silent display for None/False."""
    if isinstance(progress, Progress):
        return progress
    if progress is None or progress is False:
        return SILENT
    raise TypeError(
        f"progress must be a metalite.common.progress.Progress or None, got {progress!r}"
    )
