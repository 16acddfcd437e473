"""N-way K-shot Q-query episode sampling, reproducible from a seed.

An ``Episode`` holds model-input arrays: support (N*K, H, W, 1) with labels 0..N-1 in class order,
and query (N*Q, H, W, 1). ``EpisodeSampler`` draws them from a ``FewShotData``, optionally with
all N classes from one group (Omniglot's within-alphabet episodes, the harder setting) for a fraction
of the episodes, and optionally distorting every image (``metalite.training.augment``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .augment import Augment
from .datasets import DataError, FewShotData


@dataclass
class Episode:
    support_x: np.ndarray
    support_y: np.ndarray
    query_x: np.ndarray
    query_y: np.ndarray
    ways: int
    classes: np.ndarray  # dataset class indices, in label order


def check_episode_fits(
    data: FewShotData, ways: int, shots: int, queries: int, within_group: bool = False
):
    """Raise DataError if ``data`` cannot supply N-way (K+Q)-image episodes."""
    if ways < 2:
        raise DataError(f"--ways must be at least 2, got {ways}")
    if shots < 1 or queries < 0:
        raise DataError(f"--shots must be >= 1 and --queries >= 0 (got {shots}, {queries})")
    need = shots + queries
    usable = np.flatnonzero(data.counts() >= need)
    if len(usable) < ways:
        few = int((data.counts() < need).sum())
        raise DataError(
            f"{data.spec or 'data'}: {len(usable)} classes have at least {need} images "
            f"(--shots {shots} + --queries {queries}), fewer than --ways {ways}"
            + (f" ({few} classes have fewer images)" if few else "")
        )
    if within_group:
        sizes = {}
        for c in usable:
            sizes[data.groups[c]] = sizes.get(data.groups[c], 0) + 1
        if max(sizes.values()) < ways:
            raise DataError(
                f"no alphabet has {ways} classes with {need} images for within-alphabet episodes"
            )
    return usable


class EpisodeSampler:
    """Draws episodes; ``state()``/``set_state()`` let a resumed run continue the same sequence.

    ``within_group``: the fraction of episodes (0..1; True = 1) whose classes all come from one group.
    ``augment``: distortion applied to every image of ``sample()`` (``sample_indices`` is unaffected).
    """

    def __init__(
        self,
        data: FewShotData,
        ways: int,
        shots: int,
        queries: int,
        seed: int = 0,
        within_group: float = 0.0,
        augment: Augment | None = None,
    ):
        self.data, self.ways, self.shots, self.queries = data, ways, shots, queries
        self.within_group = float(within_group)
        if not 0.0 <= self.within_group <= 1.0:
            raise DataError(f"within-alphabet fraction must be between 0 and 1, got {within_group}")
        self.augment = augment
        self.usable = check_episode_fits(data, ways, shots, queries, self.within_group >= 1)
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
        if self.within_group and (self.within_group >= 1 or self.rng.random() < self.within_group):
            # Hard episode: all classes from one group; from as few groups as possible when none is big enough.
            groups = self._big_groups or list(self._by_group)
            pool = []
            for g in self.rng.permutation(len(groups)):
                pool.extend(self.rng.permutation(self._by_group[groups[g]]))
                if len(pool) >= self.ways:
                    break
            return np.array(pool[: self.ways])
        return self.rng.choice(self.usable, self.ways, replace=False)

    def _pick(self):
        classes = self._classes()
        s_idx, q_idx = [], []
        for c in classes:
            pick = self.rng.choice(
                self.data.indices_of(c), self.shots + self.queries, replace=False
            )
            s_idx.append(pick[: self.shots])
            q_idx.append(pick[self.shots :])
        return classes, np.concatenate(s_idx), np.concatenate(q_idx)

    def sample(self) -> Episode:
        classes, s_idx, q_idx = self._pick()
        labels = np.arange(self.ways)
        sx, qx = self._inputs[s_idx], self._inputs[q_idx]
        if self.augment is not None and self.augment.active:
            sx, qx = self.augment(self.rng, sx), self.augment(self.rng, qx)
        return Episode(
            sx,
            np.repeat(labels, self.shots),
            qx,
            np.repeat(labels, self.queries),
            self.ways,
            classes,
        )

    def sample_indices(self):
        """(support image indices, query image indices) of one episode, labels as in ``sample``."""
        return self._pick()[1:]
