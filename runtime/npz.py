"""Read a .npz without trusting it: never pickle, bounded expansion, every member loaded once.

Our writers (``save_head``, ``save_state``) store members uncompressed, so a file whose members would
expand to more than ``MAX_EXPANSION`` times its size (beyond 1 MiB) is a zip bomb and is refused
before anything is decompressed.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from metalite.common.errors import one_line

MAX_EXPANSION = 16


def read_npz(path) -> dict:
    """Return ``{name: ndarray}`` for every member of the .npz at ``path``.

    Raises:
      ValueError: one line saying why the file cannot be used (not a zip, would expand too far,
        pickled objects, a member that is not an array, truncated data).
      OSError: the file cannot be opened.
    """
    size = os.path.getsize(path)
    try:
        with zipfile.ZipFile(path) as zf:
            declared = sum(max(0, i.file_size) for i in zf.infolist())
            names = [i.filename for i in zf.infolist()]
    except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError) as e:
        raise ValueError(f"not a readable .npz ({one_line(e)})") from None
    if declared > MAX_EXPANSION * size + (1 << 20):
        raise ValueError(f"members would expand to {declared} bytes from a {size}-byte file")
    odd = [n for n in names if not n.endswith(".npy")]
    if odd:
        raise ValueError(f"member {odd[0][:80]!r} is not a numpy array")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except OSError:
        raise
    except Exception as e:  # zipfile, numpy's header parser, MemoryError: all mean a bad file
        raise ValueError(f"not a readable .npz ({one_line(e)})") from None
