"""The training augmentations (``data.augment``), registered by name: name -> per-modality pipelines.

A builder takes the padding (``data.pad``) and the erasing probability
(``data.random_erasing``) and returns ``{VISIBLE: pipeline, INFRARED:
pipeline}``. A new augmentation is one function here (or in its own module)
with ``@register_augmentation("name")``; the config schema's choices for
``data.augment`` are the registered names, so nothing else lists them.
"""

from __future__ import annotations

from collections.abc import Callable

from vireid.data.channel_aug import train_transform
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.transforms import (
    Compose,
    HorizontalFlip,
    Normalize,
    PadCrop,
    RandomErasing,
    RandomGrayscale,
    ToFloat,
    torchvision_erasing,
)
from vireid.registry import import_submodules

IDKL_PAD_FILL = 127  # IDKL pads with grey: transforms.Pad(10, fill=127)

_AUGMENTATIONS: dict[str, Callable[[int, float], dict]] = {}


def register_augmentation(name: str):
    """Decorator: ``builder(padding, erasing) -> {VISIBLE: pipeline, INFRARED: pipeline}`` under ``name``."""

    def add(builder):
        if name in _AUGMENTATIONS:
            raise ValueError(f"augmentation {name!r} is already registered")
        _AUGMENTATIONS[name] = builder
        return builder

    return add


def unregister_augmentation(name: str) -> None:
    """Remove ``name`` (for plugins and tests that register something temporary)."""
    _AUGMENTATIONS.pop(name, None)


def augmentation_names() -> tuple[str, ...]:
    """The registered names, in registration order (what ``data.augment`` accepts)."""
    import_submodules("vireid.data")  # an augmentation in a file of its own registers itself on import
    return tuple(_AUGMENTATIONS)


def train_transforms(augment: str = "caj", padding: int = 10, erasing: float = 0.5) -> dict:
    """Per-modality training pipelines of the augmentation named ``augment``."""
    if augment not in augmentation_names():
        raise ValueError(f"unknown augmentation {augment!r}; expected one of {', '.join(_AUGMENTATIONS)}")
    return _AUGMENTATIONS[augment](padding, erasing)


def _both(steps: list) -> dict:
    pipeline = Compose(steps)
    return {VISIBLE: pipeline, INFRARED: pipeline}


@register_augmentation("plain")
def plain(padding: int, erasing: float) -> dict:
    """AGW's: pad + random crop + flip + normalise (``erasing`` not used)."""
    return _both([PadCrop(padding, 0), HorizontalFlip(0.5), ToFloat(), Normalize()])


@register_augmentation("erasing")
def with_erasing(padding: int, erasing: float) -> dict:
    """plain + random erasing with probability ``erasing`` (area 0.02-0.4, uniform aspect, 100 tries, black
    padding)."""
    return _both([PadCrop(padding, 0), HorizontalFlip(0.5), ToFloat(), Normalize(), RandomErasing(p=erasing)])


@register_augmentation("gray")
def gray(padding: int, erasing: float) -> dict:
    """plain, and every visible image grey (its luminance in all three channels) with probability 0.5;
    infrared images as in plain (``erasing`` not used)."""
    geometry = [PadCrop(padding, 0), HorizontalFlip(0.5), ToFloat()]
    return {VISIBLE: Compose([*geometry, RandomGrayscale(0.5), Normalize()]),
            INFRARED: Compose([*geometry, Normalize()])}


@register_augmentation("idkl")
def idkl(padding: int, erasing: float) -> dict:
    """IDKL's own: grey padding (fill 127), then torchvision ``RandomErasing()`` defaults (area 0.02-0.33,
    log-uniform aspect 0.3-3.3, 10 tries)."""
    return _both([PadCrop(padding, IDKL_PAD_FILL), HorizontalFlip(0.5), ToFloat(), Normalize(),
                  torchvision_erasing(p=erasing)])


@register_augmentation("caj")
def caj(padding: int, erasing: float) -> dict:
    """CAJ's per-view pipelines: channel random erasing; ChannelAdapGray on infrared (``erasing`` not used)."""
    return {VISIBLE: train_transform("visible", padding), INFRARED: train_transform("infrared", padding)}
