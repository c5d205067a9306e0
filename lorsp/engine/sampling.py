"""Seeds and the order of an epoch: everything random in an epoch is drawn from (seed, epoch, rank) alone."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Sampler


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix-style), so that (seed, epoch, rank) streams do not overlap."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) & 0xFFFFFFFFFFFFFFFF
        value = (value * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler[int]):
    """The order of an epoch from (seed, epoch) alone, split over ranks so that batches add up.

    With ``shuffle`` the epoch's order is ``torch.randperm(n)`` from a generator seeded by (seed, epoch),
    padded (by repeating its start) to a multiple of ``world_size``; rank r takes entries r, r + W, ...
    Rank r's i-th batch of ``b`` images and the other ranks' i-th batches together are the single-process
    i-th batch of ``W·b`` images, so N processes see the same global batches as one. Without ``shuffle``
    (evaluation) the ranks take disjoint strided shards with no padding (nothing counted twice).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.n, self.world_size))
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 17))
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.world_size > 1 and self.n % self.world_size:
            order += order[: self.world_size - self.n % self.world_size]
        return order[self.rank::self.world_size]

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        if not self.shuffle:
            return len(range(self.rank, self.n, self.world_size))
        return -(-self.n // self.world_size)
