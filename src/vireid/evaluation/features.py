"""Test-time features: load the images of a list of samples in batches and embed them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vireid.data.image_dataset import ImageDataset, batch_extras
from vireid.data.keypoints import HeatmapSpec, KeypointInputs, KeypointTable
from vireid.data.records import Sample
from vireid.data.transforms import eval_transform
from vireid.evaluation.finite import check_finite

# embed(images (B, 3, H, W) float, modality (B,) long) -> (B, D) features
Embed = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def image_extractor(embed: Embed, size: tuple[int, int], device: torch.device | str = "cpu",
                    batch_size: int = 64, workers: int = 2, channels_last: bool = False, resample: str = "lanczos",
                    keypoints: KeypointTable | None = None, root: str | Path | None = None,
                    heatmap: HeatmapSpec | None = None, model: torch.nn.Module | None = None,
                    depth_rule: str = "minmax", depth_bits: int = 16):
    """An ``extract(samples) -> (N, D) CPU tensor`` for :func:`vireid.evaluation.evaluate_protocol`.

    ``resample``: the resize filter of the run's training data (``data.resize``), so test images are
    resized as the training images were; ``depth_rule``/``depth_bits`` (``data.depth_rule``/``depth_bits``):
    16/32-bit greyscale is scaled to 8 bits as in training (:mod:`vireid.data.image_file`). With
    ``keypoints`` (the dataset's keypoint table; sample paths are looked up relative to ``root``) ``embed``
    is called as ``embed(images, modality, heatmaps=...)`` with each image's heat-maps rendered per
    ``heatmap``. Every batch's features are checked to be finite;
    with ``model`` (the network ``embed`` runs) the error names the layer where the first non-finite activation
    appears (:mod:`vireid.evaluation.finite`).
    """
    device = torch.device(device)
    if keypoints is not None and root is None:
        raise ValueError("image_extractor: keypoints need the dataset root their paths are relative to")

    @torch.no_grad()
    def extract(samples: Sequence[Sample]) -> torch.Tensor:
        points = None
        if keypoints is not None:
            points = KeypointInputs(keypoints.for_samples(samples, root, size), heatmap or HeatmapSpec())
        dataset = ImageDataset(samples, size, eval_transform(), resample=resample, keypoints=points,
                               depth_rule=depth_rule, depth_bits=depth_bits)
        # Own generator: extraction must not consume the global RNG (a resumed run would diverge).
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers if len(samples) > batch_size else 0,
                            generator=torch.Generator())
        rows = []
        for index, batch in enumerate(loader):
            images, modality = batch[0].to(device, non_blocking=True), batch[3].to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            extras = {k: v.to(device, non_blocking=True) for k, v in batch_extras(batch).items()}
            run = partial(embed, images, modality, **extras)
            where = f"batch {index} (images from {samples[index * batch_size].path})"
            rows.append(check_finite(run().float().cpu(), model, run, where))
        return torch.cat(rows)

    return extract
