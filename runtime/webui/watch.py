"""The watch mode: classify each new image file that appears in a folder and append one JSON line per image.

A file is read once its size and modification time stayed the same for one poll (a camera still writing
it is left alone), hidden files and names without an image extension are skipped (many tools write
``.name.tmp`` and rename), and files already there at start are not classified. An image that cannot be
used gives a line with ``"error"`` and the watch goes on. A file written again under the same name (a
camera's ``latest.jpg``) is a new image. Names are remembered only while their file is there.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from metalite.common.errors import MetaliteError

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
        self.teacher, self.folder, self.out, self.interval = (
            teacher,
            Path(folder),
            out,
            float(interval),
        )
        self._pending: dict = {}  # name -> (size, mtime_ns) at the last poll, until it stops changing
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.classified = 0
        self._done: dict = (
            self._listing() or {}
        )  # name -> (size, mtime_ns) classified; those there at start too

    def _listing(self) -> dict | None:
        """{name: (size, mtime_ns)} of the image files in the folder, or None if it cannot be read now."""
        found = {}
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return None  # the folder went away (an unmounted card): keep what is known, try again next poll
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
        written, listing = 0, self._listing()
        if listing is None:
            return 0
        # forget files that went away, so the watch stays small however long it runs
        self._done = {n: v for n, v in self._done.items() if n in listing}
        self._pending = {n: v for n, v in self._pending.items() if n in listing}
        for name, sig in sorted(listing.items()):
            if self._done.get(name) == sig:
                continue  # classified (or there at start) and unchanged since
            if (
                self._pending.get(name) != sig
            ):  # new, rewritten, or still growing: look again next poll
                self._pending[name] = sig
                continue
            del self._pending[name]
            self._done[name] = sig
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

    def start(self) -> Watcher:
        """Poll in a background thread until ``stop``."""
        self._thread = threading.Thread(target=self._run, name="metalite-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling (waits for the current poll)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
