"""The torch Dataset every loader uses: samples in, (image, pid, camid, modality) out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from vireid.data.cache import ImageCache
from vireid.data.records import Sample
from vireid.data.transforms import load_image

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class ImageDataset(Dataset):
    """Images resized to ``size`` (height, width), from the cache when one is given.

    ``transform`` is one callable or a mapping modality -> callable (CAJ uses
    different pipelines for visible and infrared); without one the item is
    the uint8 (3, H, W) image, ready for batched augmentation on the device.
    With ``second_view`` (modality -> transform) an item also carries a second
    augmentation of the same raw image (None for other modalities); collate
    with :func:`collate_views`. A key may be an index or ``(index, seed)`` (the sampler's
    ``with_seeds=True``): the seed drives the random transform, so results do
    not depend on which worker got the item.
    """

    def __init__(self, samples: Sequence[Sample], size: tuple[int, int] = (288, 144),
                 transform: Transform | Mapping[int, Transform] | None = None, cache: ImageCache | None = None,
                 resample: str = "lanczos", second_view: Mapping[int, Transform] | None = None):
        if cache is not None and len(cache) != len(samples):
            raise ValueError(f"cache {cache.path} holds {len(cache)} images but the listing has {len(samples)}")
        if isinstance(transform, Mapping):
            missing = sorted({s.modality_name for s in samples if s.modality not in transform})
            if missing:
                raise ValueError(f"transform mapping has no pipeline for modality {', '.join(missing)}; "
                                 "give one per modality (VISIBLE, INFRARED) or a single callable")
        self.samples, self.size, self.transform, self.cache = list(samples), tuple(size), transform, cache
        self.resample = resample
        # CAJ: a second, independently augmented view of the same raw image for some modalities (visible).
        self.second_view = dict(second_view or {})

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.samples[index]
        raw = self.cache[index] if self.cache is not None else load_image(sample.path, self.size, self.resample)
        transform = self.transform.get(sample.modality) if isinstance(self.transform, Mapping) else self.transform
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        image = transform(raw, generator) if transform is not None else raw
        if not self.second_view:
            return image, sample.pid, sample.camid, sample.modality
        view = self.second_view.get(sample.modality)
        second = view(raw, generator) if view is not None else None  # the generator continues: its own draws
        return image, sample.pid, sample.camid, sample.modality, second


def collate_views(items):
    """Default collation of (image, pid, camid, modality) plus the second views that exist, stacked
    in batch order: ``(images, pids, camids, modalities, second_views)``."""
    from torch.utils.data import default_collate

    head = default_collate([item[:4] for item in items])
    seconds = [item[4] for item in items if item[4] is not None]
    return (*head, torch.stack(seconds) if seconds else torch.empty(0))
