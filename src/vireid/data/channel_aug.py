"""CAJ channel augmentations (Ye et al., ICCV 2021) and the CAJ per-view training pipelines.

Parameters are the reference's (see ``protocols-reference.md`` section (e)):
all three run on the *normalised* tensor, so "grayscale" is the weighted sum
of normalised channels, not of the RGB image.

- ChannelExchange(gray=2): idx uniform in 0..gray; 0/1/2 copy that channel to
  all three; a larger idx (never drawn with gray=2) gives grayscale.
- ChannelAdapGray(probability=0.5): idx uniform in 0..3; 0/1/2 copy that
  channel (1/4 each); 3 gives grayscale if a second draw <= probability,
  else the image is unchanged (1/8 each with 0.5).
- ChannelRandomErasing: RandomErasing(p=0.5, sl=0.02, sh=0.4, r1=0.3) filled
  with (0.4914, 0.4822, 0.4465).
"""

from __future__ import annotations

import torch

from vireid.data.transforms import (
    Compose,
    HorizontalFlip,
    Normalize,
    PadCrop,
    RandomErasing,
    ToFloat,
    batch_or_single,
    randint_inclusive,
    uniform,
)

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
CAJ_ERASING_FILL = (0.4914, 0.4822, 0.4465)


def _copy_or_gray(x: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Per image: choice 0/1/2 copies that channel to all three, 3 is grayscale, anything else unchanged.

    Each choice is a 3x3 channel-mixing matrix, so the whole batch is one
    batched matrix product (one pass over the images, on any device).
    """
    mixes = torch.zeros(5, 3, 3, dtype=x.dtype)
    for channel in range(3):
        mixes[channel, :, channel] = 1
    mixes[3] = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype)
    mixes[4] = torch.eye(3, dtype=x.dtype)
    mix = mixes[torch.where((choice >= 0) & (choice <= 3), choice, 4)].to(x.device)
    return torch.einsum("bij,bjhw->bihw", mix, x)


class ChannelExchange:
    """The second visible view of CAJ: every image becomes one of its channels (or grayscale)."""

    def __init__(self, gray: int = 2):
        self.gray = gray

    @batch_or_single
    def __call__(self, x, generator=None):
        idx = randint_inclusive(x.shape[0], self.gray, generator)
        return _copy_or_gray(x, torch.where(idx > 2, 3, idx))

    def __repr__(self):
        return f"ChannelExchange(gray={self.gray})"


class ChannelAdapGray:
    """The infrared view of CAJ: a channel copy, grayscale, or unchanged."""

    def __init__(self, probability: float = 0.5):
        self.probability = probability

    @batch_or_single
    def __call__(self, x, generator=None):
        b = x.shape[0]
        idx = randint_inclusive(b, 3, generator)
        keep_gray = uniform(b, generator) <= self.probability
        choice = torch.where((idx == 3) & ~keep_gray, -1, idx)
        return _copy_or_gray(x, choice)

    def __repr__(self):
        return f"ChannelAdapGray(probability={self.probability})"


def ChannelRandomErasing(p: float = 0.5, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3) -> RandomErasing:
    """CAJ's channel random erasing: random erasing with the CIFAR-mean fill on the normalised tensor."""
    return RandomErasing(p=p, sl=sl, sh=sh, r1=r1, fill=CAJ_ERASING_FILL)


VIEWS = ("plain", "visible", "visible_exchange", "infrared")


def train_transform(view: str = "visible", padding: int = 10) -> Compose:
    """Training pipeline of one CAJ view from a resized uint8 image.

    plain: pad + crop + flip + normalise (AGW); visible: + channel random
    erasing; visible_exchange: + erasing, then ChannelExchange(gray=2);
    infrared: + erasing, then ChannelAdapGray(0.5).
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    steps = [PadCrop(padding), HorizontalFlip(0.5), ToFloat(), Normalize()]
    if view != "plain":
        steps.append(ChannelRandomErasing())
    if view == "visible_exchange":
        steps.append(ChannelExchange(gray=2))
    if view == "infrared":
        steps.append(ChannelAdapGray(0.5))
    return Compose(steps)
