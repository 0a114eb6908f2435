"""One call from a dataset root to a training DataLoader, with the checks, cache and sampler wired up."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from vireid.data.cache import ImageCache
from vireid.data.channel_aug import train_transform
from vireid.data.check import require_valid
from vireid.data.image_dataset import ImageDataset
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.samplers import CrossModalityIdentitySampler


def train_loader(name: str, root: str | Path, size: tuple[int, int] = (288, 144), num_ids: int = 8,
                 num_per_modality: int = 4, seed: int = 0, workers: int = 2, cache_dir: str | Path | None = None,
                 use_cache: bool = True, augment_on_device: bool = False, rank: int = 0, world_size: int = 1,
                 **dataset_options) -> DataLoader:
    """A loader of P x (K visible + K infrared) batches of (images, pids, camids, modalities).

    Refuses a root that fails :func:`vireid.data.check.require_valid`. With
    ``augment_on_device`` the images come as uint8 and the caller applies
    :func:`vireid.data.channel_aug.train_transform` to the batch (on the
    GPU); otherwise workers apply the CAJ visible/infrared pipelines per
    sample, seeded per batch position so runs repeat exactly. Call
    ``loader.batch_sampler.set_epoch(epoch)`` every epoch.
    """
    dataset = require_valid(root, name, **dataset_options)
    cache = None
    if use_cache:
        key = f"{name}-{'-'.join(f'{k}{v}' for k, v in sorted(dataset_options.items()))}".rstrip("-")
        cache = ImageCache.build([s.path for s in dataset.train], size, key, cache_dir)
    transform = None if augment_on_device else {VISIBLE: train_transform("visible"),
                                                 INFRARED: train_transform("infrared")}
    images = ImageDataset(dataset.train, size, transform, cache)
    sampler = CrossModalityIdentitySampler(dataset.train, num_ids, num_per_modality, seed=seed, rank=rank,
                                           world_size=world_size, with_seeds=not augment_on_device)
    return DataLoader(images, batch_sampler=sampler, num_workers=workers, persistent_workers=workers > 0)
