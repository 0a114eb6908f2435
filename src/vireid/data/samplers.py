"""Cross-modality identity batch sampler: P identities x (K visible + K infrared) per batch.

What an epoch is (this is where reference samplers are vague): every image of
every identity that has both modalities is drawn at least once, and no image
of an (identity, modality) repeats before all its images have been drawn.
Each identity's shuffled images are cut into "tickets" of K visible + K
infrared indices; an identity gets max(ceil(n_vis / K), ceil(n_ir / K))
tickets (the shorter modality cycles through its images again). The epoch is
``ceil(total tickets / P)`` batches (at least the largest ticket count of
one identity; rounded up to a multiple of the world size), a number that does not depend on the seed, so ``__len__`` is exact and
constant. Batches are filled greedily: identities whose remaining tickets
equal the remaining batches must go in (which is what guarantees nothing is
lost); the rest are drawn with probability proportional to their remaining
tickets; when fewer than P identities have tickets left, random extra
identities fill the batch with fresh draws.

Everything is drawn from ``numpy.random.default_rng([seed, epoch])``: the same
(seed, epoch) gives the same batches on every machine, for any number of
DataLoader workers. Call :meth:`set_epoch` every epoch. With ``world_size``
> 1 rank r takes global batches r, r + W, r + 2W, ...: ranks see disjoint
batches of the same plan.

A batch lists the P*K visible indices (identity by identity) and then the
P*K infrared indices in the same identity order, the "visible then infrared"
concatenation of the reference code. With ``with_seeds=True`` each entry is
``(index, augmentation_seed)`` instead, which :class:`~vireid.data.image_dataset.ImageDataset`
uses to make random augmentation independent of worker scheduling.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from vireid.data.records import INFRARED, VISIBLE, Sample


class CrossModalityIdentitySampler(Sampler):
    def __init__(self, samples: Sequence[Sample], num_ids: int = 8, num_per_modality: int = 4, seed: int = 0,
                 rank: int = 0, world_size: int = 1, with_seeds: bool = False):
        if num_ids < 1 or num_per_modality < 1:
            raise ValueError(f"num_ids and num_per_modality must be >= 1, got {num_ids} and {num_per_modality}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} with world_size {world_size}")
        self.num_ids, self.k = num_ids, num_per_modality
        self.seed, self.rank, self.world_size, self.with_seeds = seed, rank, world_size, with_seeds
        self.epoch = 0
        self.pools = _pools(samples)
        if len(self.pools) < num_ids:
            raise ValueError(f"the cross-modality sampler needs at least {num_ids} identities with both visible and "
                             f"infrared images, found {len(self.pools)}")
        self.tickets = np.array([max(math.ceil(len(v) / self.k), math.ceil(len(i) / self.k))
                                 for v, i in self.pools.values()])
        # An identity appears at most once per batch, so a dominant identity lengthens the epoch.
        batches = max(math.ceil(self.tickets.sum() / num_ids), int(self.tickets.max()))
        self.global_batches = math.ceil(batches / world_size) * world_size

    @property
    def batch_size(self) -> int:
        return 2 * self.num_ids * self.k

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.global_batches // self.world_size

    def __iter__(self) -> Iterator[list]:
        for number, batch in enumerate(self.plan()):
            if number % self.world_size != self.rank:
                continue
            if self.with_seeds:
                base = np.random.SeedSequence([self.seed, self.epoch, number]).generate_state(len(batch))
                batch = [(index, int(s)) for index, s in zip(batch, base)]
            yield batch

    def plan(self) -> list[list[int]]:
        """All global batches of the current epoch (every rank computes the same plan)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        pids = list(self.pools)
        queues = [self._tickets(rng, *self.pools[pid], count) for pid, count in zip(pids, self.tickets)]
        remaining = self.tickets.copy()
        batches = []
        for left in range(self.global_batches, 0, -1):
            chosen = self._choose(rng, remaining, left)
            visible, infrared = [], []
            for slot in chosen:
                if remaining[slot] > 0:
                    vis, ir = queues[slot][len(queues[slot]) - remaining[slot]]
                    remaining[slot] -= 1
                else:  # filler identity: a fresh draw
                    vis, ir = (_cycle(rng, pool, self.k) for pool in self.pools[pids[slot]])
                visible += vis
                infrared += ir
            batches.append(visible + infrared)
        return batches

    def _choose(self, rng: np.random.Generator, remaining: np.ndarray, left: int) -> list[int]:
        """P distinct identity slots: forced ones, then weighted by remaining tickets, then fillers."""
        forced = np.flatnonzero(remaining == left)
        others = np.flatnonzero((remaining > 0) & (remaining < left))
        take = min(self.num_ids - len(forced), len(others))
        weights = remaining[others] / remaining[others].sum() if take else None
        drawn = rng.choice(others, size=take, replace=False, p=weights) if take else np.array([], int)
        chosen = list(forced) + list(drawn)
        if len(chosen) < self.num_ids:
            idle = np.setdiff1d(np.arange(len(remaining)), chosen)
            chosen += list(rng.choice(idle, size=self.num_ids - len(chosen), replace=False))
        order = rng.permutation(len(chosen))
        return [int(chosen[i]) for i in order]

    def _tickets(self, rng, visible: np.ndarray, infrared: np.ndarray, count: int) -> list[tuple[list, list]]:
        vis = _cycle(rng, visible, count * self.k)
        ir = _cycle(rng, infrared, count * self.k)
        return [(vis[j * self.k:(j + 1) * self.k], ir[j * self.k:(j + 1) * self.k]) for j in range(count)]


def _pools(samples: Sequence[Sample]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per identity with both modalities: (visible indices, infrared indices), identities ascending."""
    by_pid: dict[int, tuple[list, list]] = {}
    for index, sample in enumerate(samples):
        lists = by_pid.setdefault(sample.pid, ([], []))
        if sample.modality == VISIBLE:
            lists[0].append(index)
        elif sample.modality == INFRARED:
            lists[1].append(index)
    return {pid: (np.array(v), np.array(i)) for pid, (v, i) in sorted(by_pid.items()) if v and i}


def _cycle(rng: np.random.Generator, pool: np.ndarray, n: int) -> list[int]:
    """n indices: whole shuffled passes over ``pool`` (no repeat before every index is used)."""
    passes = [rng.permutation(pool) for _ in range(math.ceil(n / len(pool)))]
    return [int(i) for i in np.concatenate(passes)[:n]]
