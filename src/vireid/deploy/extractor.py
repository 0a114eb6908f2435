"""Embed your own images with a trained run: paths, PIL images, numpy arrays or tensors in, (N, D) features out.

The extractor applies the run's own test-time preprocessing (the image file
policy of :mod:`vireid.data.image_file`, with the run's ``data.depth_rule``
for 16/32-bit greyscale; resize to the config's ``data.height`` x
``data.width`` with its ``data.resize`` filter, scale to [0, 1],
ImageNet normalisation: the evaluation pipeline of
:mod:`vireid.evaluation.features`), so a feature extracted here equals the one
``vireid eval`` ranks with. Every image needs a modality ("visible" or
"infrared"): two-stream models route it to its own stem, and an index never
mixes up which side of the search an image belongs to.

Input conventions:

* ``str`` / ``Path``: an image file, decoded to RGB (an infrared image stored
  as grey becomes three equal channels, as in training).
* ``PIL.Image.Image``: converted to RGB (16/32-bit greyscale scaled as files are).
* ``numpy.ndarray``: uint8, (H, W) grey or (H, W, 3) RGB; uint16 (H, W) grey (scaled as 16-bit files are).
* ``torch.Tensor`` of dtype uint8: an image (3, H, W) or a batch (B, 3, H, W),
  resized like a file when its size differs.
* ``torch.Tensor`` of a float dtype: *already preprocessed* model input
  (normalised, (3, H, W) or (B, 3, H, W) at the run's input size); use this to
  bring your own pipeline.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vireid.data import transforms
from vireid.data.image_file import UnreadableImage, read_rgb, to_rgb
from vireid.data.records import MODALITY_NAMES, parse_modality
from vireid.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vireid.evaluation.finite import check_finite

log = logging.getLogger(__name__)


def resolve_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """The checkpoint file of a run directory (or the file itself), or a clear error when it is missing."""
    from vireid.engine.checkpoint import CHECKPOINT_NAME

    path = Path(run_or_checkpoint)
    if path.is_dir():
        ckpt = path / CHECKPOINT_NAME
        if not ckpt.is_file():
            raise FileNotFoundError(f"run directory {path} has no {CHECKPOINT_NAME}; train it first "
                                    "(vireid train ... --out {path}) or pass a checkpoint file")
        return ckpt
    if not path.is_file():
        raise FileNotFoundError(f"no run directory or checkpoint file at {path}")
    return path


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a model's state dict, in name order.

    Why: an index stores this, so a gallery is never queried with features from
    a different model (another run, or the same run trained further).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class RunIdentity:
    """What a feature file or index records about the model that made it."""

    method: str
    checkpoint: str
    input_size: tuple[int, int]
    feature_dim: int
    flip: bool
    weights_sha256: str

    def as_dict(self) -> dict:
        return {"method": self.method, "checkpoint": self.checkpoint, "input_size": list(self.input_size),
                "feature_dim": self.feature_dim, "flip": self.flip, "weights_sha256": self.weights_sha256}


@dataclass
class FileFeatures:
    """Features of the images that decoded, their paths and modalities, and the files that did not."""

    features: torch.Tensor
    paths: list[str]
    modalities: list[int]
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


DEFAULT_DECODING = {"resample": "lanczos", "depth_rule": "minmax", "depth_bits": 16}


def _pil_to_uint8(image: Image.Image, size: tuple[int, int], resample: str = "lanczos", depth_rule: str = "minmax",
                  depth_bits: int = 16) -> torch.Tensor:
    """RGB (deep greyscale scaled by the depth rule), resized as training resizes: uint8 (3, H, W)."""
    return transforms.resize_rgb(to_rgb(image, depth_rule, depth_bits), size, resample)


def decode_file(path: str | Path, size: tuple[int, int], **decoding) -> torch.Tensor:
    """A decoded, resized image file under the training's file policy; ``UnreadableImage`` (a ValueError) or
    FileNotFoundError naming the file otherwise. ``decoding``: resample, depth_rule, depth_bits."""
    decoding = {**DEFAULT_DECODING, **decoding}
    resample = decoding.pop("resample")
    try:
        image = read_rgb(path, **decoding)
    except UnreadableImage as exc:
        if not Path(path).exists():
            raise FileNotFoundError(f"image not found: {path}") from None
        raise exc from None
    return transforms.resize_rgb(image, size, resample)


def to_uint8_image(item, size: tuple[int, int], **decoding) -> torch.Tensor:
    """One path / PIL image / uint8 array / uint8 tensor as a uint8 (3, H, W) tensor at ``size``."""
    if isinstance(item, (str, Path)):
        return decode_file(item, size, **decoding)
    if isinstance(item, Image.Image):
        return _pil_to_uint8(item, size, **decoding)
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint16 and item.ndim == 2:
            return _pil_to_uint8(Image.fromarray(item), size, **decoding)  # mode I;16: scaled by the depth rule
        if item.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 (H, W) or (H, W, 3), or uint16 (H, W), got dtype "
                             f"{item.dtype} shape {item.shape}; scale floats to 0..255 first")
        if item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (1, 3)):
            return _pil_to_uint8(Image.fromarray(item.squeeze(2) if item.ndim == 3 and item.shape[2] == 1
                                                 else item), size, **decoding)
        raise ValueError(f"numpy images must be (H, W) or (H, W, 3), got shape {item.shape}")
    if isinstance(item, torch.Tensor) and item.dtype == torch.uint8:
        if item.dim() != 3 or item.shape[0] not in (1, 3):
            raise ValueError(f"uint8 image tensors must be (3, H, W), got shape {tuple(item.shape)}")
        if tuple(item.shape[1:]) == tuple(size) and item.shape[0] == 3:
            return item.cpu()
        array = item.cpu().permute(1, 2, 0).numpy()
        return to_uint8_image(np.ascontiguousarray(array), size, **decoding)
    raise ValueError(f"cannot embed an object of type {type(item).__name__}; give a path, a PIL image, "
                     "a uint8 numpy array or a tensor")


def modality_codes(modality, count: int) -> torch.Tensor:
    """Per-call ("infrared") or per-image (a sequence or tensor) modality as a (count,) long tensor."""
    if modality is None:
        raise ValueError("no modality given: pass modality='visible' or 'infrared' (or one per image); "
                         "the model and the index need to know which side each image comes from")
    if isinstance(modality, torch.Tensor):
        values = [int(v) for v in modality.reshape(-1).tolist()]
        if modality.dim() == 0:
            values = values * count
    elif isinstance(modality, (str, int)):
        values = [parse_modality(modality)] * count
    else:
        values = [parse_modality(m) if m is not None else None for m in modality]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            raise ValueError(f"image {missing[0]} has no modality ({len(missing)} of {len(values)} images have "
                             "none); give 'visible' or 'infrared' for every image")
    if len(values) != count:
        raise ValueError(f"{len(values)} modalities for {count} images; give one per image or one per call")
    bad = sorted({v for v in values if v not in MODALITY_NAMES})
    if bad:
        raise ValueError(f"modality values must be 0 (visible) or 1 (infrared), got {bad}")
    return torch.tensor(values, dtype=torch.long)


class Extractor:
    """Embed images with a trained run (a run directory or a checkpoint file).

    Args:
        run_or_checkpoint: what ``vireid train`` wrote.
        device: "auto" (CUDA when available), "cpu", "cuda", ...
        batch_size: images per forward pass.
        flip: average with the horizontally flipped image; None keeps the run's ``eval.flip``.
        amp: float16 autocast; None = on for CUDA, off on the CPU (features are returned as float32).
        workers: threads decoding image files (Pillow releases the GIL while decoding and resizing).

    Example::

        from vireid import Extractor
        extract = Extractor("runs/idkl")
        feats = extract(["a.jpg", "b.jpg"], modality="infrared")      # (2, D) float32, CPU
    """

    def __init__(self, run_or_checkpoint: str | Path, device: str | torch.device = "auto", batch_size: int = 64,
                 flip: bool | None = None, amp: bool | None = None, workers: int = 2):
        from vireid.app.runs import data_settings, load_run

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.checkpoint = resolve_checkpoint(run_or_checkpoint)
        self.recipe, self.config = load_run(self.checkpoint)
        data = data_settings(self.config)
        self.size = (int(data.height), int(data.width))
        # decoded as the run's training images were: same resize filter, same rule for 16/32-bit greyscale
        self.decoding = {"resample": data.resize, "depth_rule": data.depth_rule, "depth_bits": data.depth_bits}
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model = self.recipe.model.to(self.device).eval()
        if flip is not None:
            self.recipe.flip = bool(flip)
        self.flip = bool(self.recipe.flip)
        self.amp = self.device.type == "cuda" if amp is None else bool(amp)
        self.batch_size, self.workers = int(batch_size), int(workers)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        self._hash: str | None = None
        self._dim: int | None = None

    # -- identity ---------------------------------------------------------------------------------
    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def weights_sha256(self) -> str:
        if self._hash is None:
            self._hash = weights_hash(self.model)
        return self._hash

    @property
    def feature_dim(self) -> int:
        """Width of the feature, from one forward pass of a blank image (cached)."""
        if self._dim is None:
            blank = torch.zeros(1, 3, *self.size, device=self.device)
            self._dim = int(self._forward(blank, torch.zeros(1, dtype=torch.long)).shape[1])
        return self._dim

    def identity(self) -> RunIdentity:
        return RunIdentity(self.method, str(self.checkpoint.resolve()), self.size, self.feature_dim, self.flip,
                           self.weights_sha256)

    # -- embedding --------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float on the device (the run's test transform)."""
        x = images.to(self.device, non_blocking=True).float().div_(255)
        return (x - self._mean) / self._std

    def _forward(self, batch: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        def run() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                return self.recipe.embed(batch, modality.to(self.device)).float().cpu()

        return check_finite(run(), self.recipe.model, run, f"a batch of {len(batch)} image(s)")

    def _float_batch(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.unsqueeze(0) if x.dim() == 3 else x
        if batch.dim() != 4 or batch.shape[1] != 3 or tuple(batch.shape[2:]) != self.size:
            raise ValueError(f"float tensors are taken as preprocessed model input of shape (B, 3, {self.size[0]}, "
                             f"{self.size[1]}) (this run's input size); got {tuple(x.shape)}. Pass uint8 images "
                             "to have them resized and normalised")
        return batch.float()

    def __call__(self, images, modality=None) -> torch.Tensor:
        """(N, D) float32 CPU features, one row per image, in order."""
        return self.embed(images, modality)

    def embed(self, images, modality=None) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.is_floating_point():
            batch = self._float_batch(images)
            codes = modality_codes(modality, len(batch))
            return torch.cat([self._forward(batch[i:i + self.batch_size].to(self.device),
                                            codes[i:i + self.batch_size])
                              for i in range(0, len(batch), self.batch_size)]) if len(batch) else self._empty()
        items = self._as_items(images)
        codes = modality_codes(modality, len(items))
        rows = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            decoded = self._decode(chunk)
            rows.append(self._forward(self.preprocess(torch.stack(decoded)), codes[start:start + len(chunk)]))
        return torch.cat(rows) if rows else self._empty()

    def _empty(self) -> torch.Tensor:
        return torch.zeros(0, self.feature_dim)

    @staticmethod
    def _as_items(images) -> list:
        if isinstance(images, (str, Path, Image.Image, np.ndarray)) and not (
                isinstance(images, np.ndarray) and images.ndim == 4):
            return [images]
        if isinstance(images, np.ndarray):  # (B, H, W, 3)
            return list(images)
        if isinstance(images, torch.Tensor):
            if images.dim() == 3:
                return [images]
            if images.dim() == 4:
                return list(images)
            raise ValueError(f"image tensors must be (3, H, W) or (B, 3, H, W), got shape {tuple(images.shape)}")
        return list(images)

    def _decode(self, items: Sequence) -> list[torch.Tensor]:
        if self.workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(lambda item: to_uint8_image(item, self.size, **self.decoding), items))
        return [to_uint8_image(item, self.size, **self.decoding) for item in items]

    def embed_files(self, paths: Sequence[str | Path], modality, *, strict: bool = False,
                    progress: bool = False) -> FileFeatures:
        """Features of image files; undecodable files are collected in ``failed`` (or raise when ``strict``).

        Why not drop them silently: a gallery that quietly lost images gives
        wrong search results with no hint; the caller lists them.
        """
        paths = [str(p) for p in paths]
        codes = modality_codes(modality, len(paths))
        kept_paths, kept_codes, failed, rows = [], [], [], []
        bar = _progress(len(paths), progress)
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start:start + self.batch_size]
            images, keep = [], []
            for offset, result in enumerate(self._try_decode(chunk)):
                if isinstance(result, torch.Tensor):
                    images.append(result)
                    keep.append(start + offset)
                elif strict:
                    raise ValueError(f"{result} (--strict stops at the first unreadable image)")
                else:
                    failed.append((chunk[offset], result))
            if images:
                index = torch.tensor(keep)
                rows.append(self._forward(self.preprocess(torch.stack(images)), codes[index]))
                kept_paths += [paths[i] for i in keep]
                kept_codes += codes[index].tolist()
            bar.update(len(chunk))
        bar.close()
        features = torch.cat(rows) if rows else self._empty()
        return FileFeatures(features, kept_paths, kept_codes, failed)

    def _try_decode(self, paths: Sequence[str]) -> list:
        def one(path):
            try:
                return decode_file(path, self.size, **self.decoding)
            except (ValueError, FileNotFoundError) as exc:
                return str(exc)

        if self.workers > 1 and len(paths) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(one, paths))
        return [one(p) for p in paths]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="extract", dynamic_ncols=True)
