"""Unlabelled target batches and (source, target) batch pairs for domain adaptation (``vireid adapt``).

The target's identity labels are never read here: a target item is
(image, index into the target listing, camid, modality), and batches are
drawn from pseudo labels the method sets with :meth:`TargetBatches.set_labels`
(P pseudo classes x (K visible + K infrared)), or, before any pseudo label
exists, as 2 x P x K random images (half visible, half infrared). Like the
source sampler, batches and their augmentation are a pure function of
(seed, epoch, labels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from vireid.data.image_dataset import ImageDataset
from vireid.data.records import INFRARED, VISIBLE, Sample


class TargetBatches:
    """Batches of unlabelled target images; the pid slot of a batch holds the sample's index."""

    def __init__(self, samples: Sequence[Sample], size: tuple[int, int], transform, num_ids: int,
                 num_per_modality: int, seed: int = 0, workers: int = 0, cache=None):
        if num_ids < 1 or num_per_modality < 1:
            raise ValueError(f"num_ids and num_per_modality must be >= 1, got {num_ids} and {num_per_modality}")
        self.samples = list(samples)
        modality = np.array([s.modality for s in self.samples])
        self.visible = np.flatnonzero(modality == VISIBLE)
        self.infrared = np.flatnonzero(modality == INFRARED)
        if not len(self.visible) or not len(self.infrared):
            raise ValueError(f"the target training set needs visible and infrared images, found "
                             f"{len(self.visible)} visible and {len(self.infrared)} infrared")
        indexed = [dataclasses.replace(s, pid=i) for i, s in enumerate(self.samples)]  # labels are never used
        self.dataset = ImageDataset(indexed, size, transform, cache)
        self.p, self.k, self.seed, self.workers = num_ids, num_per_modality, seed, workers
        self.labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def modality(self) -> torch.Tensor:
        return torch.tensor([s.modality for s in self.samples])

    def set_labels(self, labels) -> None:
        """Pseudo labels (N,) that group the next batches, or None for random batches."""
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(self.samples),):
                raise ValueError(f"pseudo labels must have shape ({len(self.samples)},), got {labels.shape}")
        self.labels = labels

    def plan(self, epoch: int, steps: int) -> list[list[int]]:
        """``steps`` batches of target indices for ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, 7])
        pools = []
        if self.labels is not None:
            for k in np.unique(self.labels):
                vis = np.intersect1d(np.flatnonzero(self.labels == k), self.visible)
                ir = np.intersect1d(np.flatnonzero(self.labels == k), self.infrared)
                if len(vis) and len(ir):
                    pools.append((vis, ir))
        batches = []
        for _ in range(steps):
            if pools:
                chosen = rng.choice(len(pools), size=min(self.p, len(pools)), replace=False)
                vis = [int(i) for c in chosen for i in rng.choice(pools[c][0], self.k, len(pools[c][0]) < self.k)]
                ir = [int(i) for c in chosen for i in rng.choice(pools[c][1], self.k, len(pools[c][1]) < self.k)]
            else:
                n = self.p * self.k
                vis = [int(i) for i in rng.choice(self.visible, n, len(self.visible) < n)]
                ir = [int(i) for i in rng.choice(self.infrared, n, len(self.infrared) < n)]
            batches.append(vis + ir)
        return batches

    def epoch(self, epoch: int, steps: int, start: int = 0) -> Iterator:
        batches = self.plan(epoch, steps)[start:]
        keyed = []
        for number, batch in enumerate(batches, start=start):
            seeds = np.random.SeedSequence([self.seed, epoch, number, 7]).generate_state(len(batch))
            keyed.append([(i, int(s)) for i, s in zip(batch, seeds)])
        yield from DataLoader(self.dataset, batch_sampler=keyed, num_workers=self.workers,
                              generator=torch.Generator().manual_seed(epoch))


class PairedBatches:
    """(source batch, target batch) pairs, as many per epoch as the source has batches."""

    def __init__(self, source, target: TargetBatches):
        self.source, self.target = source, target

    def __len__(self) -> int:
        return len(self.source)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    def epoch(self, epoch: int, start: int = 0) -> Iterator:
        yield from zip(self.source.epoch(epoch, start), self.target.epoch(epoch, len(self.source), start))
