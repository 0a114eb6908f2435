"""From a dataset root to training batches, with the checks, cache, augmentation and sampler wired up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vireid.data.augmentations import train_transforms
from vireid.data.cache import ImageCache
from vireid.data.channel_aug import train_transform
from vireid.data.check import require_valid, usable_samples
from vireid.data.image_dataset import ImageDataset, collate_views
from vireid.data.keypoints import HeatmapSpec, KeypointInputs, keypoint_file
from vireid.data.records import VISIBLE, Sample
from vireid.data.samplers import build_sampler, sampler_options
from vireid.schema import DataSettings

CAJ_VIEWS = ("exchange", "raw")


def second_views(caj_view: str = "exchange", padding: int = 10) -> dict:
    """Extra views drawn from the raw image.

    ``caj_view="raw"``: CAJ's channel-exchanged visible view as the reference
    makes it (its own crop, flip, channel random erasing, then
    ChannelExchange(gray=2)); "exchange": none (the recipe channel-exchanges
    the first view).
    """
    if caj_view not in CAJ_VIEWS:
        raise ValueError(f"unknown data.caj_view {caj_view!r}; expected one of {', '.join(CAJ_VIEWS)}")
    return {VISIBLE: train_transform("visible_exchange", padding)} if caj_view == "raw" else {}


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

    def __init__(self, dataset: ImageDataset, sampler, workers: int = 2):
        self.dataset, self.sampler, self.workers = dataset, sampler, workers
        self.validation: list[Sample] = []  # held-out training identities, if any

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch_length(self, epoch: int) -> int:
        """Batches (optimiser steps) in ``epoch``; constant except for the IDKL sampler (194-195 on SYSU-MM01)."""
        self.sampler.set_epoch(epoch)
        return len(self.sampler)

    @property
    def fixed_epoch_length(self) -> bool:
        """Whether every epoch has the same number of batches."""
        return getattr(self.sampler, "fixed_length", True)

    @property
    def num_classes(self) -> int:
        return len({s.pid for s in self.dataset.samples})

    def loader(self, epoch: int = 0, start: int = 0) -> DataLoader:
        self.sampler.set_epoch(epoch)
        # Own generator: creating the loader must not consume the global torch RNG.
        collate = collate_views if self.dataset.second_view else None
        return DataLoader(self.dataset, batch_sampler=_SkipFirst(self.sampler, start), num_workers=self.workers,
                          generator=torch.Generator().manual_seed(epoch), collate_fn=collate)

    def epoch(self, epoch: int, start: int = 0) -> Iterator:
        yield from self.loader(epoch, start)


def train_batches(data: DataSettings, root: str | Path, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                  augment_on_device: bool = False, cache_dir: str | Path | None = None,
                  strict: bool = False) -> TrainBatches:
    """Training batches of the ``data`` settings from a dataset root; refuses a root that fails
    :func:`vireid.data.check.require_valid`.

    ``data`` is the checked ``data:`` section (:class:`vireid.schema.DataSettings`: dataset, image size,
    P and K, augmentation, sampler, cache, ...); the arguments are what is not data config: the run's
    ``seed``, this process's ``rank`` in ``world_size``, the cache folder (default: the user cache).
    With ``augment_on_device`` the images come as uint8 and the caller
    augments the whole batch (on the GPU); otherwise workers apply the
    per-modality pipelines (:func:`vireid.data.augmentations.train_transforms`), seeded per batch position
    so runs repeat exactly. With ``data.val_ids`` that many training identities are held out; their samples
    are ``batches.validation``. ``data.sampler`` names the batch sampler
    (:func:`vireid.data.samplers.build_sampler`); ``data.caj_view="raw"`` adds
    CAJ's second visible view to every batch (:func:`second_views`).
    With ``data.keypoints`` (a keypoint file relative to ``root``, :mod:`vireid.data.keypoints`) every
    batch ends with ``{"heatmaps": (B, 17, h, w)}``; without it batches are unchanged.
    Training images that cannot be read are skipped with a warning that
    lists them, or refused when ``strict`` (:func:`vireid.data.check.usable_samples`).
    """
    dataset_options = {"trial": data.trial} if data.trial is not None else {}
    size = (data.height, data.width)
    dataset = require_valid(root, data.dataset, **dataset_options)
    train, validation = split_validation(usable_samples(dataset.train, strict), data.val_ids, seed)
    cache = None
    if data.cache:
        key = f"{data.dataset}-{'-'.join(f'{k}{v}' for k, v in sorted(dataset_options.items()))}".rstrip("-")
        if data.val_ids:
            key += f"-val{data.val_ids}s{seed}"
        cache = ImageCache.build([s.path for s in train], size, key, cache_dir, resample=data.resize,
                                 depth=(data.depth_rule, data.depth_bits))
    transform = None if augment_on_device else train_transforms(data.augment, data.pad, data.random_erasing)
    views = None if augment_on_device else second_views(data.caj_view, data.pad)
    points = None
    keypoints = keypoint_file(root, data.keypoints)
    if keypoints is not None:
        if augment_on_device:
            raise ValueError("keypoint heat-maps are made in the data workers; augment_on_device cannot be used "
                             "with data.keypoints")
        heatmap = HeatmapSpec(data.heatmap_stride, data.heatmap_sigma)
        points = KeypointInputs.from_file(keypoints, train, root, size, heatmap)
    images = ImageDataset(train, size, transform, cache, resample=data.resize, second_view=views, keypoints=points,
                          depth_rule=data.depth_rule, depth_bits=data.depth_bits)
    options = {name: getattr(data, name) for name in sampler_options()}  # e.g. idkl_epoch
    batch_sampler = build_sampler(data.sampler, train, data.p, data.k, seed=seed, rank=rank,
                                  world_size=world_size, with_seeds=not augment_on_device, **options)
    batches = TrainBatches(images, batch_sampler, data.workers)
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


def train_loader(data: DataSettings, root: str | Path, **options) -> DataLoader:
    """The DataLoader of epoch 0 (see :func:`train_batches` for the options); call
    ``loader.batch_sampler.sampler.set_epoch(e)`` or use :class:`TrainBatches` for later epochs."""
    return train_batches(data, root, **options).loader(0)
