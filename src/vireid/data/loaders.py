"""From a dataset root to training batches, with the checks, cache, augmentation and sampler wired up."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vireid.data.cache import ImageCache
from vireid.data.channel_aug import train_transform
from vireid.data.check import require_valid, usable_samples
from vireid.data.image_dataset import ImageDataset, collate_views
from vireid.data.keypoints import HeatmapSpec, KeypointInputs
from vireid.data.records import INFRARED, VISIBLE, Sample
from vireid.data.samplers import build_sampler
from vireid.data.transforms import (
    Compose,
    HorizontalFlip,
    Normalize,
    PadCrop,
    RandomErasing,
    ToFloat,
    torchvision_erasing,
)

AUGMENTATIONS = ("plain", "erasing", "idkl", "caj")
IDKL_PAD_FILL = 127  # IDKL pads with grey: transforms.Pad(10, fill=127)


def train_transforms(augment: str = "caj", padding: int = 10, erasing: float = 0.5) -> dict:
    """Per-modality training pipelines.

    plain: pad + random crop + flip + normalise (AGW); erasing: plain + random
    erasing with probability ``erasing`` (area 0.02-0.4, uniform aspect, 100
    tries, black padding); idkl: IDKL's own (grey padding, fill 127;
    torchvision ``RandomErasing()`` defaults: area 0.02-0.33, log-uniform
    aspect 0.3-3.3, 10 tries); caj: CAJ's per-view pipelines (channel random
    erasing; ChannelAdapGray on infrared).
    """
    if augment == "caj":
        return {VISIBLE: train_transform("visible", padding), INFRARED: train_transform("infrared", padding)}
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {', '.join(AUGMENTATIONS)}")
    fill = IDKL_PAD_FILL if augment == "idkl" else 0
    steps = [PadCrop(padding, fill), HorizontalFlip(0.5), ToFloat(), Normalize()]
    if augment == "erasing":
        steps.append(RandomErasing(p=erasing))
    if augment == "idkl":
        steps.append(torchvision_erasing(p=erasing))
    pipeline = Compose(steps)
    return {VISIBLE: pipeline, INFRARED: pipeline}


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


def train_batches(name: str, root: str | Path, size: tuple[int, int] = (288, 144), num_ids: int = 8,
                  num_per_modality: int = 4, seed: int = 0, workers: int = 2, augment: str = "caj",
                  padding: int = 10, erasing: float = 0.5, cache_dir: str | Path | None = None,
                  use_cache: bool = True, augment_on_device: bool = False, rank: int = 0, world_size: int = 1,
                  val_ids: int = 0, sampler: str = "balanced", resize: str = "lanczos", caj_view: str = "exchange",
                  idkl_epoch: str = "pass", keypoints: str | Path | None = None, heatmap: HeatmapSpec | None = None,
                  depth_rule: str = "minmax", depth_bits: int = 16, strict: bool = False,
                  **dataset_options) -> TrainBatches:
    """Training batches from a dataset root; refuses a root that fails :func:`vireid.data.check.require_valid`.

    With ``augment_on_device`` the images come as uint8 and the caller
    augments the whole batch (on the GPU); otherwise workers apply the
    per-modality pipelines, seeded per batch position so runs repeat exactly.
    With ``val_ids`` that many training identities are held out; their samples
    are ``batches.validation``. ``sampler`` names the batch sampler
    (:func:`vireid.data.samplers.build_sampler`: balanced, agw, idkl, vsd),
    ``idkl_epoch`` what an IDKL-sampler epoch is (pass, ignite04);
    ``resize`` the resize filter (lanczos, bilinear); ``caj_view="raw"`` adds
    CAJ's second visible view to every batch (:func:`second_views`).
    With ``keypoints`` (a keypoint file, :mod:`vireid.data.keypoints`) every
    batch ends with ``{"heatmaps": (B, 17, h, w)}`` rendered per ``heatmap``;
    without it batches are unchanged. ``depth_rule``/``depth_bits``: how 16/32-bit greyscale becomes 8-bit
    (:mod:`vireid.data.image_file`). Training images that cannot be read are skipped with a warning that
    lists them, or refused when ``strict`` (:func:`vireid.data.check.usable_samples`).
    """
    dataset = require_valid(root, name, **dataset_options)
    train, validation = split_validation(usable_samples(dataset.train, strict), val_ids, seed)
    cache = None
    if use_cache:
        key = f"{name}-{'-'.join(f'{k}{v}' for k, v in sorted(dataset_options.items()))}".rstrip("-")
        if val_ids:
            key += f"-val{val_ids}s{seed}"
        cache = ImageCache.build([s.path for s in train], size, key, cache_dir, resample=resize,
                                 depth=(depth_rule, depth_bits))
    transform = None if augment_on_device else train_transforms(augment, padding, erasing)
    views = None if augment_on_device else second_views(caj_view, padding)
    points = None
    if keypoints is not None:
        if augment_on_device:
            raise ValueError("keypoint heat-maps are made in the data workers; augment_on_device cannot be used "
                             "with data.keypoints")
        points = KeypointInputs.from_file(keypoints, train, root, size, heatmap or HeatmapSpec())
    images = ImageDataset(train, size, transform, cache, resample=resize, second_view=views, keypoints=points,
                          depth_rule=depth_rule, depth_bits=depth_bits)
    batch_sampler = build_sampler(sampler, train, num_ids, num_per_modality, seed=seed, rank=rank,
                                  world_size=world_size, with_seeds=not augment_on_device, idkl_epoch=idkl_epoch)
    batches = TrainBatches(images, batch_sampler, workers)
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
