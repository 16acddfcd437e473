"""LRU cache of embeddings keyed by the content of the preprocessed image.

The key is the sha1 of one model-input image's float32 bytes plus its shape, so the same picture passed
as a file, a uint8 array or a float array (anything that preprocesses to the same input) is embedded
once. ``fit`` after ``fit``, ``add_class`` and re-fitting never recompute a support embedding that is
still cached.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def image_key(x: np.ndarray) -> bytes:
    """Return the cache key (20-byte sha1 digest) of one preprocessed image ``x`` (float32 (H, W, C))."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    h = hashlib.sha1(repr(x.shape).encode())
    h.update(x.tobytes())
    return h.digest()


class EmbeddingCache:
    """Least-recently-used map from ``image_key`` to a float32 embedding vector.

    Args:
      maxsize: most embeddings kept (default 4096; 0 disables caching).

    Attributes:
      hits, misses: lookup counters since creation.
    """

    def __init__(self, maxsize: int = 4096):
        self.maxsize = max(0, int(maxsize))
        self._data: OrderedDict = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes):
        """Return the cached embedding (read-only float32 (D,)) for ``key``, or None; marks it recently used."""
        v = self._data.get(key)
        if v is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return v

    def put(self, key: bytes, embedding: np.ndarray) -> None:
        """Store a copy of ``embedding`` under ``key``, evicting the least recently used beyond ``maxsize``."""
        if self.maxsize == 0:
            return
        v = np.array(embedding, dtype=np.float32, copy=True)
        v.setflags(write=False)
        self._data[key] = v
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._data.clear()

    def embed(self, x: np.ndarray, compute) -> np.ndarray:
        """Embeddings of a batch, computing only the images not cached.

        Args:
          x: float32 (N, H, W, C) preprocessed images.
          compute: function float32 (M, H, W, C) -> float32 (M, D), called once with the misses (if any).
        Returns:
          float32 (N, D).
        """
        if (
            self.maxsize == 0
        ):  # caching off: no keys to hash (at batch 1 hashing costs as much as quantizing)
            self.misses += len(x)
            return np.asarray(compute(x), np.float32)
        keys = [image_key(img) for img in x]
        found = [self.get(k) for k in keys]
        todo = [i for i, v in enumerate(found) if v is None]
        if todo:
            # identical images inside one batch are computed once
            first = {}
            for i in todo:
                first.setdefault(keys[i], i)
            uniq = list(first.values())
            new = np.asarray(compute(x[uniq]), np.float32)
            by_key = {keys[i]: new[j] for j, i in enumerate(uniq)}
            for k, v in by_key.items():
                self.put(k, v)
            for i in todo:
                found[i] = by_key[keys[i]]
        if not found:
            return np.zeros((0, 0), np.float32)
        return np.stack(found).astype(np.float32)
