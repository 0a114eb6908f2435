"""Test-time features: load the images of a list of samples in batches and embed them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader

from vireid.data.image_dataset import ImageDataset
from vireid.data.records import Sample
from vireid.data.transforms import eval_transform

# embed(images (B, 3, H, W) float, modality (B,) long) -> (B, D) features
Embed = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def image_extractor(embed: Embed, size: tuple[int, int], device: torch.device | str = "cpu",
                    batch_size: int = 64, workers: int = 2, channels_last: bool = False, resample: str = "lanczos"):
    """An ``extract(samples) -> (N, D) CPU tensor`` for :func:`vireid.evaluation.evaluate_protocol`.

    ``resample``: the resize filter of the run's training data (``data.resize``), so test images are
    resized as the training images were.
    """
    device = torch.device(device)

    @torch.no_grad()
    def extract(samples: Sequence[Sample]) -> torch.Tensor:
        dataset = ImageDataset(samples, size, eval_transform(), resample=resample)
        # Own generator: extraction must not consume the global RNG (a resumed run would diverge).
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers if len(samples) > batch_size else 0,
                            generator=torch.Generator())
        rows = []
        for images, _, _, modality in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            rows.append(embed(images, modality.to(device)).float().cpu())
        return torch.cat(rows)

    return extract
