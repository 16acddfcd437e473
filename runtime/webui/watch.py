"""The watch mode: classify each new image file that appears in a folder and append one JSON line per image.

A file is read once its size and modification time stayed the same for one poll (a camera still writing
it is left alone), hidden files and names without an image extension are skipped (many tools write
``.name.tmp`` and rename), and files already there at start are not classified. An image that cannot be
used gives a line with ``"error"`` and the watch goes on.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from ..errors import MetaliteError
from ..images import IMAGE_EXTENSIONS


class Watcher:
    """Polls ``folder`` every ``interval`` seconds and writes a JSON line per new image to ``out``.

    Args:
      teacher: the ``Teacher`` whose classifier answers (``classify_file``).
      folder: the folder to watch (not recursive).
      out: a text file object the lines are appended to (flushed after each line).
      interval: seconds between polls.
    """

    def __init__(self, teacher, folder, out, interval: float = 0.5):
        self.teacher, self.folder, self.out, self.interval = teacher, Path(folder), out, float(interval)
        self._seen: dict = {}  # name -> (size, mtime_ns) when first seen, or None once classified
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.classified = 0
        self._seen = dict.fromkeys(self._listing())  # there before the watch started: not new

    def _listing(self) -> dict:
        found = {}
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return found  # the folder went away (an unmounted card): try again next poll
        for e in entries:
            if e.name.startswith(".") or not e.name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            try:
                if e.is_file():
                    st = e.stat()
                    found[e.name] = (st.st_size, st.st_mtime_ns)
            except OSError:
                continue
        return found

    def poll(self) -> int:
        """One look at the folder: classify the files that stopped changing; returns how many lines were written."""
        written = 0
        for name, sig in sorted(self._listing().items()):
            before = self._seen.get(name, "new")
            if before is None:
                continue
            if before != sig:  # new, or still growing
                self._seen[name] = sig
                continue
            self._seen[name] = None
            self._write(self._line(self.folder / name))
            written += 1
        return written

    def _line(self, path: Path) -> dict:
        row = {"image": str(path), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            row.update(self.teacher.classify_file(path))
        except MetaliteError as e:
            row["error"] = str(e)
        return row

    def _write(self, row: dict) -> None:
        self.out.write(json.dumps(row) + "\n")
        self.out.flush()
        self.classified += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def start(self) -> "Watcher":
        """Poll in a background thread until ``stop``."""
        self._thread = threading.Thread(target=self._run, name="metalite-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (waits for the current poll)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
