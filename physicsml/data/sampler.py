"""A shuffling sampler whose order depends only on (seed, epoch), sharded across ranks."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Yields this rank's share of ``range(num_items)``, reshuffled each epoch.

    The permutation of epoch ``e`` is drawn from ``seed + e`` alone, so a resumed run sees
    the same order as an uninterrupted one. Items are dealt round-robin to ``world_size``
    ranks without padding: every item is seen exactly once per epoch across ranks. With
    ``even=True`` (training under DDP, where every rank must take the same number of steps)
    the last ``num_items % world_size`` items of each epoch's order are left out.
    """

    def __init__(
        self,
        num_items: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        even: bool = False,
    ) -> None:
        self.num_items = num_items
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.even = even
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """The indices this rank visits in the current epoch."""
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        if self.even:
            order = order[: len(order) - len(order) % self.world_size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def __len__(self) -> int:
        total = self.num_items - (self.num_items % self.world_size if self.even else 0)
        return len(range(self.rank, total, self.world_size))
