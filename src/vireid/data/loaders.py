"""From a dataset root to training batches, with the checks, cache, augmentation and sampler wired up."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from vireid.data.cache import ImageCache
from vireid.data.channel_aug import train_transform
from vireid.data.check import require_valid
from vireid.data.image_dataset import ImageDataset
from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.data.samplers import CrossModalityIdentitySampler
from vireid.data.transforms import Compose, HorizontalFlip, Normalize, PadCrop, RandomErasing, ToFloat

AUGMENTATIONS = ("plain", "erasing", "caj")


def train_transforms(augment: str = "caj", padding: int = 10, erasing: float = 0.5) -> dict:
    """Per-modality training pipelines.

    plain: pad + random crop + flip + normalise (AGW); erasing: plain + random
    erasing with probability ``erasing`` (IDKL); caj: CAJ's per-view pipelines
    (channel random erasing; ChannelAdapGray on infrared).
    """
    if augment == "caj":
        return {VISIBLE: train_transform("visible", padding), INFRARED: train_transform("infrared", padding)}
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    steps = [PadCrop(padding), HorizontalFlip(0.5), ToFloat(), Normalize()]
    if augment == "erasing":
        steps.append(RandomErasing(p=erasing))
    pipeline = Compose(steps)
    return {VISIBLE: pipeline, INFRARED: pipeline}


class _SkipFirst:
    """A batch sampler view that drops the first ``start`` batches (resume mid-epoch without loading them)."""

    def __init__(self, sampler, start: int):
        self.sampler, self.start = sampler, start

    def __iter__(self):
        for number, batch in enumerate(self.sampler):
            if number >= self.start:
                yield batch

    def __len__(self) -> int:
        return max(len(self.sampler) - self.start, 0)


class TrainBatches:
    """P x (K visible + K infrared) batches of (images, pids, camids, modalities), one epoch at a time.

    ``epoch(e, start)`` yields the batches of epoch ``e`` from batch ``start``
    on; batches and their augmentation are a pure function of (seed, e), so a
    resumed run sees exactly what an uninterrupted one would have.
    """

    def __init__(self, dataset: ImageDataset, sampler: CrossModalityIdentitySampler, workers: int = 2):
        self.dataset, self.sampler, self.workers = dataset, sampler, workers
        self.validation: list[Sample] = []  # held-out training identities, if any

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def num_classes(self) -> int:
        return len({s.pid for s in self.dataset.samples})

    def loader(self, epoch: int = 0, start: int = 0) -> DataLoader:
        self.sampler.set_epoch(epoch)
        # Own generator: creating the loader must not consume the global torch RNG.
        return DataLoader(self.dataset, batch_sampler=_SkipFirst(self.sampler, start), num_workers=self.workers,
                          generator=torch.Generator().manual_seed(epoch))

    def epoch(self, epoch: int, start: int = 0) -> Iterator:
        yield from self.loader(epoch, start)


def train_batches(name: str, root: str | Path, size: tuple[int, int] = (288, 144), num_ids: int = 8,
                  num_per_modality: int = 4, seed: int = 0, workers: int = 2, augment: str = "caj",
                  padding: int = 10, erasing: float = 0.5, cache_dir: str | Path | None = None,
                  use_cache: bool = True, augment_on_device: bool = False, rank: int = 0, world_size: int = 1,
                  val_ids: int = 0, **dataset_options) -> TrainBatches:
    """Training batches from a dataset root; refuses a root that fails :func:`vireid.data.check.require_valid`.

    With ``augment_on_device`` the images come as uint8 and the caller
    augments the whole batch (on the GPU); otherwise workers apply the
    per-modality pipelines, seeded per batch position so runs repeat exactly.
    With ``val_ids`` that many training identities are held out; their samples
    are ``batches.validation``.
    """
    dataset = require_valid(root, name, **dataset_options)
    train, validation = split_validation(dataset.train, val_ids, seed)
    cache = None
    if use_cache:
        key = f"{name}-{'-'.join(f'{k}{v}' for k, v in sorted(dataset_options.items()))}".rstrip("-")
        if val_ids:
            key += f"-val{val_ids}s{seed}"
        cache = ImageCache.build([s.path for s in train], size, key, cache_dir)
    transform = None if augment_on_device else train_transforms(augment, padding, erasing)
    images = ImageDataset(train, size, transform, cache)
    sampler = CrossModalityIdentitySampler(train, num_ids, num_per_modality, seed=seed, rank=rank,
                                           world_size=world_size, with_seeds=not augment_on_device)
    batches = TrainBatches(images, sampler, workers)
    batches.validation = validation
    return batches


def split_validation(samples: list[Sample], val_ids: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold ``val_ids`` training identities out (drawn by ``seed``) for model selection.

    The remaining identities are relabelled 0..N-1 so the classifier has no
    unused classes; held-out samples keep their original labels.
    """
    if not val_ids:
        return list(samples), []
    pids = sorted({s.pid for s in samples})
    if not 0 < val_ids < len(pids) - 1:
        raise ValueError(f"data.val_ids must be between 1 and {len(pids) - 2} (the training split has "
                         f"{len(pids)} identities), got {val_ids}")
    held = set(np.random.default_rng([seed, 7]).choice(pids, size=val_ids, replace=False).tolist())
    label = {pid: i for i, pid in enumerate(p for p in pids if p not in held)}
    train = [replace(s, pid=label[s.pid]) for s in samples if s.pid not in held]
    return train, [s for s in samples if s.pid in held]


def train_loader(name: str, root: str | Path, **options) -> DataLoader:
    """The DataLoader of epoch 0 (see :func:`train_batches` for the options); call
    ``loader.batch_sampler.sampler.set_epoch(e)`` or use :class:`TrainBatches` for later epochs."""
    return train_batches(name, root, **options).loader(0)
