"""Image transforms without torchvision: decode + resize with Pillow, augment with torch.

Every random transform takes an optional ``torch.Generator`` (so a seed
fixes the result) and works on one image ``(3, H, W)`` or on a batch
``(B, 3, H, W)`` on any device: the random parameters are drawn on the CPU
generator, one set per image, and applied with vectorised tensor ops, so the
same pipeline can run per sample in DataLoader workers or once per batch on
the GPU. Pipelines start from uint8 images (what the cache stores); pad, crop
and flip run on uint8, then ``ToFloat`` and ``Normalize``, then erasing and
the channel augmentations on the normalised tensor, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vireid.data.image_file import read_rgb

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# How a source image is resized to the training size: AGW/CAJ pre-resize with PIL's ANTIALIAS (Lanczos);
# IDKL resizes with torchvision's Resize, i.e. PIL bilinear (``data.resize``).
RESAMPLING = {"lanczos": Image.LANCZOS, "bilinear": Image.BILINEAR}


def load_image(path: str | Path, size: tuple[int, int], resample: str = "lanczos", depth_rule: str = "minmax",
               depth_bits: int = 16) -> torch.Tensor:
    """Decode ``path`` to RGB and resize to (height, width): uint8 (3, H, W).

    ``resample``: "lanczos" (PIL's old ANTIALIAS, the AGW lineage) or "bilinear" (IDKL). The file is opened
    under :mod:`vireid.data.image_file`'s policy (refused files raise ``UnreadableImage`` naming them; deep
    greyscale is scaled to 8 bits by ``depth_rule``/``depth_bits``).
    """
    check_resample(resample)  # before decoding
    return resize_rgb(read_rgb(path, depth_rule, depth_bits), size, resample)


def check_resample(resample: str) -> None:
    if resample not in RESAMPLING:
        raise ValueError(f"unknown resize filter {resample!r}; expected one of {', '.join(RESAMPLING)}")


def resize_rgb(image: Image.Image, size: tuple[int, int], resample: str = "lanczos") -> torch.Tensor:
    """An RGB Pillow image resized to (height, width) with ``resample`` as uint8 (3, H, W)."""
    check_resample(resample)
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), RESAMPLING[resample])
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def batch_or_single(fn: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]):
    """Let a batch transform accept a single (3, H, W) image too."""

    def call(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() == 3:
            return fn(self, x.unsqueeze(0), generator).squeeze(0)
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects (3, H, W) or (B, 3, H, W), got shape {tuple(x.shape)}")
        return fn(self, x, generator)

    return call


def uniform(n: int, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """n uniform draws on the CPU (where generators live), as float64."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def randint_inclusive(n: int, high: torch.Tensor | int, generator: torch.Generator | None) -> torch.Tensor:
    """n integers uniform in 0..high (inclusive), ``high`` per draw."""
    return torch.floor(uniform(n, generator) * (torch.as_tensor(high, dtype=torch.float64) + 1)).long()


class Compose:
    def __init__(self, steps: Sequence[Callable]):
        self.steps = list(steps)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, generator)
        return x

    def with_points(self, x: torch.Tensor, points: torch.Tensor, generator: torch.Generator | None = None):
        """The same pipeline on the image and on its (17, 3) keypoints (pixels): ``(image, points)``.

        Geometric steps move the points with the image from the same random
        draws, so the image comes out exactly as from ``self(x, generator)``;
        the other steps (colour, erasing) leave the points alone.
        """
        return apply_with_points(self.steps, x, points, generator)

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(map(repr, self.steps)) + ")"


def apply_with_points(steps: Sequence[Callable], x: torch.Tensor, points: torch.Tensor,
                      generator: torch.Generator | None = None):
    """Run ``steps`` on an image and its keypoints; a geometric step must know how to move the points."""
    for step in steps:
        if hasattr(step, "with_points"):
            x, points = step.with_points(x, points, generator)
        elif getattr(step, "geometric", False):
            raise ValueError(f"{step!r} moves pixels but cannot move keypoints; it cannot be used with keypoints")
        else:
            x = step(x, generator)
    return x, points


class PadCrop:
    """Pad by ``padding`` with ``fill`` then crop a random window of the original size (Pad + RandomCrop).

    ``fill`` is the pixel value of the border (uint8 scale): 0 in AGW/CAJ, 127 (grey) in IDKL.
    """

    def __init__(self, padding: int = 10, fill: int = 0):
        self.padding, self.fill = padding, fill

    geometric = True

    @batch_or_single
    def __call__(self, x, generator=None):
        return self._crop(x, *self._draw(x.shape[0], generator))

    def _draw(self, b: int, generator) -> tuple[list[int], list[int]]:
        p = self.padding
        return randint_inclusive(b, 2 * p, generator).tolist(), randint_inclusive(b, 2 * p, generator).tolist()

    def _crop(self, x, tops, lefts):
        _, _, h, w = x.shape
        p = self.padding
        padded = torch.nn.functional.pad(x, (p, p, p, p), value=self.fill)
        return torch.stack([padded[i, :, top:top + h, left:left + w]
                            for i, (top, left) in enumerate(zip(tops, lefts))])

    def with_points(self, x, points, generator=None):
        """The crop of ``__call__`` (same draws) and the (17, 3) / (B, 17, 3) keypoints moved with it."""
        from vireid.data.keypoints import shift_points

        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        tops, lefts = self._draw(batch.shape[0], generator)
        out = self._crop(batch, tops, lefts)
        p = self.padding
        dx = torch.tensor([p - left for left in lefts], dtype=points.dtype)
        dy = torch.tensor([p - top for top in tops], dtype=points.dtype)
        if single:
            return out.squeeze(0), shift_points(points, dx[0], dy[0])
        return out, shift_points(points, dx, dy)

    def __repr__(self):
        return f"PadCrop(padding={self.padding}, fill={self.fill})"


class HorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    geometric = True

    @batch_or_single
    def __call__(self, x, generator=None):
        return self._flip(x, (uniform(x.shape[0], generator) < self.p).to(x.device))

    @staticmethod
    def _flip(x, flip):
        out = x.clone()
        out[flip] = x[flip].flip(-1)
        return out

    def with_points(self, x, points, generator=None):
        """The flip of ``__call__`` (same draw) and the keypoints mirrored with it, left and right swapped."""
        from vireid.data.keypoints import flip_points

        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        flip = uniform(batch.shape[0], generator) < self.p
        out = self._flip(batch, flip.to(x.device))
        pts = points.unsqueeze(0) if single else points
        pts = torch.where(flip.view(-1, 1, 1), flip_points(pts, batch.shape[-1]), pts)
        return (out.squeeze(0), pts.squeeze(0)) if single else (out, pts)

    def __repr__(self):
        return f"HorizontalFlip(p={self.p})"


class ToFloat:
    """uint8 [0, 255] -> float32 [0, 1] (ToTensor's scaling)."""

    def __call__(self, x, generator=None):
        if x.dtype != torch.uint8:
            raise ValueError(f"ToFloat expects a uint8 image, got {x.dtype}")
        return x.float().div_(255)

    def __repr__(self):
        return "ToFloat()"


class Normalize:
    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, x, generator=None):
        shape = (3, 1, 1) if x.dim() == 3 else (1, 3, 1, 1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x - mean) / std

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomGrayscale:
    """With probability ``p`` per image, replace it by its luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B)
    in all three channels; runs on the float [0, 1] image, before ``Normalize``.

    Why: an infrared camera keeps shape and texture but not colour; a visible image seen without its colour
    now and then keeps a network from relying on colour alone (the "random grayscale" of many VI-ReID
    baselines; CAJ's channel augmentations are a stronger relative, :mod:`vireid.data.channel_aug`).
    """

    LUMA = (0.299, 0.587, 0.114)

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomGrayscale: p must be a probability in [0, 1], got {p!r}")
        self.p = p

    @batch_or_single
    def __call__(self, x, generator=None):
        if x.shape[1] != 3 or not x.is_floating_point():
            raise ValueError(f"RandomGrayscale expects float RGB images (B, 3, H, W), got {tuple(x.shape)} {x.dtype}")
        gray = (uniform(x.shape[0], generator) < self.p).to(x.device)
        luma = torch.tensor(self.LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        grey = (x * luma).sum(1, keepdim=True).expand_as(x)
        return torch.where(gray.view(-1, 1, 1, 1), grey, x)

    def __repr__(self):
        return f"RandomGrayscale(p={self.p})"


class RandomErasing:
    """Erase one random rectangle (area fraction in [sl, sh], aspect in [r1, r2]) with probability ``p``.

    Up to ``attempts`` tries to find a rectangle that fits; h = round(sqrt(area *
    aspect)), w = round(sqrt(area / aspect)), accepted if h < H and w < W;
    the fill is a per-channel constant. ``r2`` defaults to 1/r1; the aspect
    is uniform, or log-uniform with ``log_ratio``. With the CAJ fill (CIFAR
    means on the normalised tensor) this is CAJ's ChannelRandomErasing, see
    :mod:`vireid.data.channel_aug`; :func:`torchvision_erasing` is IDKL's.
    """

    def __init__(self, p: float = 0.5, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                 fill: Sequence[float] = (0.0, 0.0, 0.0), r2: float | None = None, log_ratio: bool = False,
                 attempts: int = 100):
        self.p, self.sl, self.sh, self.r1, self.fill = p, sl, sh, r1, tuple(fill)
        self.r2 = 1 / r1 if r2 is None else r2
        self.log_ratio, self.attempts = log_ratio, attempts

    @batch_or_single
    def __call__(self, x, generator=None):
        b, c, h, w = x.shape
        apply = uniform(b, generator) <= self.p
        target = uniform(b * self.attempts, generator, self.sl, self.sh).view(b, -1) * (h * w)
        if self.log_ratio:
            aspect = torch.exp(uniform(b * self.attempts, generator, np.log(self.r1), np.log(self.r2))).view(b, -1)
        else:
            aspect = uniform(b * self.attempts, generator, self.r1, self.r2).view(b, -1)
        eh = torch.round(torch.sqrt(target * aspect)).long()
        ew = torch.round(torch.sqrt(target / aspect)).long()
        fits = (eh < h) & (ew < w)
        first = fits.long().argmax(dim=1)
        found = fits.any(dim=1) & apply
        eh = eh.gather(1, first[:, None]).squeeze(1)
        ew = ew.gather(1, first[:, None]).squeeze(1)
        top = randint_inclusive(b, (h - eh).clamp(min=0), generator)
        left = randint_inclusive(b, (w - ew).clamp(min=0), generator)
        fill = torch.tensor(self.fill, dtype=x.dtype, device=x.device)
        fill = fill.view(3, 1, 1) if c == 3 else fill[:1].view(1, 1, 1)
        channels = c if c == 3 else 1  # the reference fills only the first channel of a non-RGB tensor
        out = x.clone()
        for i in torch.nonzero(found).flatten().tolist():
            y0, x0 = int(top[i]), int(left[i])
            out[i, :channels, y0:y0 + int(eh[i]), x0:x0 + int(ew[i])] = fill
        return out

    def __repr__(self):
        return (f"RandomErasing(p={self.p}, sl={self.sl}, sh={self.sh}, r1={self.r1}, r2={self.r2:.4g}, "
                f"log_ratio={self.log_ratio}, attempts={self.attempts}, fill={self.fill})")


def torchvision_erasing(p: float = 0.5) -> RandomErasing:
    """torchvision's ``RandomErasing()`` defaults, what IDKL trains with: area 0.02-0.33 of the image,
    aspect log-uniform in [0.3, 3.3], 10 tries, value 0 (on the normalised tensor)."""
    return RandomErasing(p=p, sl=0.02, sh=0.33, r1=0.3, r2=3.3, log_ratio=True, attempts=10)


def eval_transform() -> Compose:
    """Test time: the resized uint8 image, scaled and normalised."""
    return Compose([ToFloat(), Normalize()])
