"""The torch Dataset every loader uses: samples in, (image, pid, camid, modality) out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset

from vireid.data.cache import ImageCache
from vireid.data.keypoints import KeypointInputs
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

    With ``keypoints`` (:class:`vireid.data.keypoints.KeypointInputs`, one
    row per sample) an item also carries ``{"heatmaps": (17, h, w)}`` as its
    last element: the keypoints cropped and flipped with the image (same
    random draws, so the image is what it would be without them), rendered
    as Gaussian heat-maps. Without keypoints items are exactly as before.
    """

    def __init__(self, samples: Sequence[Sample], size: tuple[int, int] = (288, 144),
                 transform: Transform | Mapping[int, Transform] | None = None, cache: ImageCache | None = None,
                 resample: str = "lanczos", second_view: Mapping[int, Transform] | None = None,
                 keypoints: KeypointInputs | None = None, depth_rule: str = "minmax", depth_bits: int = 16):
        if cache is not None and len(cache) != len(samples):
            raise ValueError(f"cache {cache.path} holds {len(cache)} images but the listing has {len(samples)}")
        if isinstance(transform, Mapping):
            missing = sorted({s.modality_name for s in samples if s.modality not in transform})
            if missing:
                raise ValueError(f"transform mapping has no pipeline for modality {', '.join(missing)}; "
                                 "give one per modality (VISIBLE, INFRARED) or a single callable")
        self.samples, self.size, self.transform, self.cache = list(samples), tuple(size), transform, cache
        self.resample = resample
        self.depth = (depth_rule, depth_bits)  # how deep (16/32-bit) greyscale becomes 8-bit
        # CAJ: a second, independently augmented view of the same raw image for some modalities (visible).
        self.second_view = dict(second_view or {})
        if keypoints is not None and len(keypoints.points) != len(self.samples):
            raise ValueError(f"keypoints for {len(keypoints.points)} images but the listing has {len(self.samples)}")
        if keypoints is not None and self.second_view:
            raise ValueError("keypoint heat-maps and a second (CAJ raw) view cannot be combined; "
                             "set data.caj_view: exchange")
        self.keypoints = keypoints

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        sample = self.samples[index]
        raw = self.cache[index] if self.cache is not None else load_image(sample.path, self.size, self.resample,
                                                                                 *self.depth)
        transform = self.transform.get(sample.modality) if isinstance(self.transform, Mapping) else self.transform
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if self.keypoints is not None:
            return self._with_heatmaps(index, raw, transform, generator, sample)
        image = transform(raw, generator) if transform is not None else raw
        if not self.second_view:
            return image, sample.pid, sample.camid, sample.modality
        view = self.second_view.get(sample.modality)
        second = view(raw, generator) if view is not None else None  # the generator continues: its own draws
        return image, sample.pid, sample.camid, sample.modality, second

    def _with_heatmaps(self, index, raw, transform, generator, sample):
        points = torch.from_numpy(self.keypoints.points[index])
        if transform is None:
            image = raw
        elif hasattr(transform, "with_points"):
            image, points = transform.with_points(raw, points, generator)
        else:
            raise ValueError(f"transform {transform!r} cannot move keypoints (it has no with_points)")
        heatmaps = self.keypoints.spec.render(points, tuple(image.shape[-2:]))
        return image, sample.pid, sample.camid, sample.modality, {"heatmaps": heatmaps}


def collate_views(items):
    """Default collation of (image, pid, camid, modality) plus the second views that exist, stacked
    in batch order: ``(images, pids, camids, modalities, second_views)``."""
    from torch.utils.data import default_collate

    head = default_collate([item[:4] for item in items])
    seconds = [item[4] for item in items if item[4] is not None]
    return (*head, torch.stack(seconds) if seconds else torch.empty(0))


def batch_extras(batch) -> dict:
    """The extra per-sample inputs of a collated batch (``{"heatmaps": (B, 17, h, w)}``), or {} when it has none.

    Extras travel as a dict at the end of the batch tuple, so recipes that
    unpack ``images, pids, camids, modality = batch[:4]`` are unaffected.
    """
    return batch[-1] if isinstance(batch, (list, tuple)) and batch and isinstance(batch[-1], dict) else {}
