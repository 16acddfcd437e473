"""N-way K-shot Q-query episode sampling, reproducible from a seed.

An ``Episode`` holds model-input arrays: support (N*K, H, W, 1) with labels 0..N-1 in class order,
and query (N*Q, H, W, 1). ``EpisodeSampler`` draws them from a ``FewShotData``, optionally with
all N classes from one group (Omniglot's within-alphabet episodes, the harder setting).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .datasets import DataError, FewShotData


@dataclass
class Episode:
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    ways: int
    classes: np.ndarray  # dataset class indices, in label order


def check_episode_fits(data: FewShotData, ways: int, shots: int, queries: int, within_group: bool = False):
    """Raise DataError if ``data`` cannot supply N-way (K+Q)-image episodes."""
    if ways < 2:
        raise DataError(f"--ways must be at least 2, got {ways}")
    if shots < 1 or queries < 0:
        raise DataError(f"--shots must be >= 1 and --queries >= 0 (got {shots}, {queries})")
    need = shots + queries
    usable = np.flatnonzero(data.counts() >= need)
    if len(usable) < ways:
        few = int((data.counts() < need).sum())
        raise DataError(f"{data.spec or 'data'}: {len(usable)} classes have at least {need} images "
                        f"(--shots {shots} + --queries {queries}), fewer than --ways {ways}"
                        + (f" ({few} classes have fewer images)" if few else ""))
    if within_group:
        sizes = {}
        for c in usable:
            sizes[data.groups[c]] = sizes.get(data.groups[c], 0) + 1
        if max(sizes.values()) < ways:
            raise DataError(f"no alphabet has {ways} classes with {need} images for within-alphabet episodes")
    return usable


class EpisodeSampler:
    """Draws episodes; ``state()``/``set_state()`` let a resumed run continue the same sequence."""

    def __init__(self, data: FewShotData, ways: int, shots: int, queries: int, seed: int = 0,
                 within_group: bool = False):
        self.data, self.ways, self.shots, self.queries = data, ways, shots, queries
        self.within_group = within_group
        self.usable = check_episode_fits(data, ways, shots, queries, within_group)
        self.rng = np.random.default_rng(seed)
        self._inputs = data.inputs()
        groups = np.array(data.groups)[self.usable]
        self._by_group = {g: self.usable[groups == g] for g in np.unique(groups)}
        self._big_groups = [g for g, cs in self._by_group.items() if len(cs) >= ways]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def _classes(self) -> np.ndarray:
        if self.within_group:
            g = self._big_groups[self.rng.integers(len(self._big_groups))]
            return self.rng.choice(self._by_group[g], self.ways, replace=False)
        return self.rng.choice(self.usable, self.ways, replace=False)

    def _pick(self):
        classes = self._classes()
        s_idx, q_idx = [], []
        for c in classes:
            pick = self.rng.choice(self.data.indices_of(c), self.shots + self.queries, replace=False)
            s_idx.append(pick[:self.shots])
            q_idx.append(pick[self.shots:])
        return classes, np.concatenate(s_idx), np.concatenate(q_idx)

    def sample(self) -> Episode:
        classes, s_idx, q_idx = self._pick()
        labels = np.arange(self.ways)
        return Episode(self._inputs[s_idx], np.repeat(labels, self.shots), self._inputs[q_idx],
                       np.repeat(labels, self.queries), self.ways, classes)

    def sample_indices(self):
        """(support image indices, query image indices) of one episode, labels as in ``sample``."""
        return self._pick()[1:]
