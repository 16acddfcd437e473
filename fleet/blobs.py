"""Content-addressed files: ``blobs/<first 2 hex>/<sha256>``, written once, never named by a client.

Holds bundle files and model-directory files. Uploaded images are small and many; they live in the
database's ``images`` table (also keyed by sha256), so one fsync commits a whole upload batch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from metalite.common.files import new_temp, remove_stale_temps
from metalite.runtime.sync.release import is_sha256

_CHUNK = 1 << 20
_TEMP = "in"  # temporaries are .in.<token>.tmp, flocked while written (common.files.new_temp)


class BlobStore:
    """Blobs under ``directory``."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the blob ``sha256`` lives (it may not exist)."""
        if not is_sha256(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.dir / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_file(self, src) -> tuple:
        """Copy the file ``src`` in (fsynced); returns (sha256, bytes). Existing blobs are not rewritten.

        Temporaries left by killed publishes (unlocked, over a minute old) are removed first."""
        remove_stale_temps(self.dir, _TEMP)
        fd, tmp = new_temp(self.dir, _TEMP)
        h, n = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                for block in iter(lambda: f.read(_CHUNK), b""):
                    h.update(block)
                    n += len(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            digest = h.hexdigest()
            dest = self.path(digest)
            if dest.is_file() and dest.stat().st_size == n:
                return digest, n
            dest.parent.mkdir(exist_ok=True)
            os.replace(tmp, dest)
            tmp = None
            return digest, n
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
