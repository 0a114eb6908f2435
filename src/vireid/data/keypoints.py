"""Per-image body keypoints: the file format, its checks, and Gaussian heat-maps that follow the image.

Methods that use body structure (SPOT) need, for every image, the 17 COCO
keypoints a pose estimator found. vireid reads them from one JSON file per
dataset (format below and in ``docs/keypoints.md``), keyed by the image path
relative to the dataset root, so the same file serves training and every test
protocol. Keypoints are in the pixel coordinates of the image *as stored*
(x to the right, y down, continuous: pixel (i, j) covers [j, j+1) x [i, i+1));
vireid scales them to the training size, moves them with the random crop and
mirrors them with the flip (swapping left and right joints), then renders one
Gaussian heat-map per joint:

    {"format": "vireid-keypoints/1",
     "layout": "coco17",
     "images": {"cam1/0001/0001.jpg": {"size": [64, 128],              # width, height of the stored image
                                       "keypoints": [[x, y, c], ...]},  # 17 rows, COCO order
                ...}}

``c`` is the estimator's confidence in [0, 1]; 0 means "not found" and gives
an empty heat-map. Nothing here is needed by a run without keypoints.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = "vireid-keypoints/1"
DEFAULT_FILE = "keypoints.json"
COCO17 = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle")
NUM_KEYPOINTS = len(COCO17)


def _flip_permutation(names: Sequence[str]) -> tuple[int, ...]:
    """Index of each joint's mirror image: a horizontal flip turns a left wrist into a right one."""
    swap = {"left_": "right_", "right_": "left_"}
    out = []
    for name in names:
        side = next((s for s in swap if name.startswith(s)), None)
        out.append(names.index(swap[side] + name[len(side):]) if side else names.index(name))
    return tuple(out)


FLIP_PERMUTATION = _flip_permutation(COCO17)  # (0, 2, 1, 4, 3, 6, 5, ...)


class KeypointFileError(ValueError):
    """A keypoint file that cannot be used; the message names the file, the image and what was expected."""


# ------------------------------------------------------------------------------------------------ the file


def parse_entry(entry, where: str) -> tuple[tuple[float, float], np.ndarray]:
    """One image's entry -> ((width, height), (17, 3) float32 [x, y, confidence]); ``where`` names it in errors."""
    if not isinstance(entry, Mapping) or "keypoints" not in entry or "size" not in entry:
        raise KeypointFileError(f"{where}: expected an object with \"size\": [width, height] and \"keypoints\": "
                                f"{NUM_KEYPOINTS} rows of [x, y, confidence], got {_short(entry)}")
    size = entry["size"]
    if (not isinstance(size, Sequence) or isinstance(size, str) or len(size) != 2
            or not all(_is_number(v) and v > 0 for v in size)):
        raise KeypointFileError(f"{where}: \"size\" must be [width, height] in pixels (> 0), got {_short(size)}")
    rows = entry["keypoints"]
    if not isinstance(rows, Sequence) or isinstance(rows, str) or len(rows) != NUM_KEYPOINTS:
        got = len(rows) if isinstance(rows, Sequence) and not isinstance(rows, str) else _short(rows)
        raise KeypointFileError(f"{where}: expected {NUM_KEYPOINTS} keypoints (COCO-17 order: "
                                f"{', '.join(COCO17[:3])}, ...), got {got}")
    for i, row in enumerate(rows):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != 3:
            raise KeypointFileError(f"{where}: keypoint {i} ({COCO17[i]}) must be [x, y, confidence], "
                                    f"got {_short(row)}")
        for name, value in zip(("x", "y", "confidence"), row):
            if not _is_number(value) or not math.isfinite(value):
                raise KeypointFileError(f"{where}: keypoint {i} ({COCO17[i]}) has a non-numeric {name} "
                                        f"{_short(value)}; expected a finite number")
        if not 0.0 <= row[2] <= 1.0:
            raise KeypointFileError(f"{where}: keypoint {i} ({COCO17[i]}) has confidence {row[2]}, "
                                    "outside [0, 1]")
    return (float(size[0]), float(size[1])), np.asarray(rows, dtype=np.float32)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class KeypointTable:
    """The checked content of one keypoint file: relative image path -> (size, (17, 3) keypoints)."""

    def __init__(self, entries: Mapping[str, tuple[tuple[float, float], np.ndarray]], path: str | Path = "<memory>"):
        self.entries, self.path = dict(entries), Path(path)

    def __len__(self) -> int:
        return len(self.entries)

    @classmethod
    def load(cls, path: str | Path) -> KeypointTable:
        """Read and check every entry of ``path`` (errors name the file and the image)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"keypoint file not found: {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise KeypointFileError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(data, Mapping) or data.get("format") != FORMAT or not isinstance(data.get("images"), Mapping):
            raise KeypointFileError(f"{path}: expected a JSON object with \"format\": \"{FORMAT}\" and an "
                                    "\"images\" object (see docs/keypoints.md)")
        if data.get("layout", "coco17") != "coco17":
            raise KeypointFileError(f"{path}: keypoint layout {data.get('layout')!r} is not supported; "
                                    "expected \"coco17\"")
        entries = {_normal(rel): parse_entry(entry, f"{path}: image {rel!r}") for rel, entry in data["images"].items()}
        return cls(entries, path)

    def for_samples(self, samples: Sequence, root: str | Path, size: tuple[int, int]) -> np.ndarray:
        """(N, 17, 3) keypoints of ``samples`` (paths under ``root``) scaled to the (height, width) ``size``.

        The stored images are resized to ``size`` before training, so x scales
        by width / stored width and y by height / stored height.
        """
        root = os.path.abspath(root)
        out = np.empty((len(samples), NUM_KEYPOINTS, 3), dtype=np.float32)
        for i, sample in enumerate(samples):
            rel = _normal(os.path.relpath(os.path.abspath(sample.path), root))
            if rel not in self.entries:
                raise KeypointFileError(f"{self.path}: no keypoints for image {rel!r} ({sample.path}); every image "
                                        f"the run reads needs an entry (the file has {len(self.entries)})")
            (width, height), points = self.entries[rel]
            out[i] = points
            out[i, :, 0] *= size[1] / width
            out[i, :, 1] *= size[0] / height
        return out


def _normal(rel: str) -> str:
    """The key form of a relative path: forward slashes, no leading './'."""
    rel = str(rel).replace("\\", "/")
    return rel[2:] if rel.startswith("./") else rel


def write_keypoints(path: str | Path, entries: Mapping[str, tuple[Sequence[float], np.ndarray]]) -> None:
    """Write ``{relpath: ((width, height), (17, 3) array)}`` in vireid's format (2 decimals: sub-pixel enough)."""
    from vireid.utils.io import write_text_atomic

    images = {rel: {"size": [float(size[0]), float(size[1])],
                    "keypoints": [[round(float(v), 2) for v in row] for row in np.asarray(points)]}
              for rel, (size, points) in sorted(entries.items())}
    write_text_atomic(path, json.dumps({"format": FORMAT, "layout": "coco17", "images": images},
                                       separators=(",", ":")) + "\n")


def keypoint_file(root: str | Path, setting: str | None) -> Path | None:
    """The keypoint file a run reads: ``data.keypoints`` as given, relative to the dataset root; None if unset."""
    if not setting:
        return None
    path = Path(setting)
    return path if path.is_absolute() else Path(root) / path


# ------------------------------------------------------------------------------------------------ geometry


def flip_points(points: torch.Tensor, width: float) -> torch.Tensor:
    """Mirror (..., 17, 3) keypoints in an image ``width`` pixels wide: x -> width - x, left <-> right joints."""
    out = points[..., FLIP_PERMUTATION, :].clone()
    out[..., 0] = width - out[..., 0]
    return out


def shift_points(points: torch.Tensor, dx, dy) -> torch.Tensor:
    """Move (17, 3) or (B, 17, 3) keypoints by (dx, dy) pixels (scalars, or one per image of a batch).

    A crop at (top, left) of an image padded by p moves every point by (p - left, p - top).
    """
    out = points.clone()
    for axis, delta in ((0, dx), (1, dy)):
        delta = torch.as_tensor(delta, dtype=out.dtype)
        out[..., axis] += delta[..., None] if delta.dim() else delta
    return out


def render_heatmaps(points: torch.Tensor, size: tuple[int, int], stride: int, sigma: float) -> torch.Tensor:
    """(..., 17, 3) keypoints in image pixels -> (..., 17, size) Gaussian heat-maps, one per joint.

    Cell (i, j) of a heat-map covers pixels [j s, (j+1) s) x [i s, (i+1) s)
    (s = ``stride``), so a keypoint at pixel x sits at cell coordinate
    u = x / s - 1/2 and the map is

        H_k(i, j) = c_k exp(-((j - u_k)^2 + (i - v_k)^2) / (2 sigma^2))

    with ``sigma`` in cells and c_k the confidence: an unsure joint gives a
    faint map, a missing one (c = 0) an empty map. A joint cropped out of the
    image keeps the part of its Gaussian that still falls inside.
    """
    h, w = size
    u = points[..., 0] / stride - 0.5
    v = points[..., 1] / stride - 0.5
    cols = torch.arange(w, dtype=points.dtype, device=points.device)
    rows = torch.arange(h, dtype=points.dtype, device=points.device)
    gx = torch.exp(-(cols - u[..., None]) ** 2 / (2 * sigma ** 2))  # (..., 17, w)
    gy = torch.exp(-(rows - v[..., None]) ** 2 / (2 * sigma ** 2))  # (..., 17, h)
    return points[..., 2, None, None] * gy[..., :, None] * gx[..., None, :]


def flip_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """The heat-maps of the mirrored image: (..., 17, h, w) mirrored along w with left and right joints swapped.

    Equal to rendering :func:`flip_points` when the image width is a multiple of the stride.
    """
    return heatmaps[..., FLIP_PERMUTATION, :, :].flip(-1)


@dataclass(frozen=True)
class HeatmapSpec:
    """How keypoints become heat-maps: ``stride`` image pixels per heat-map cell, ``sigma`` in cells."""

    stride: int = 4
    sigma: float = 1.0

    def __post_init__(self):
        if not isinstance(self.stride, int) or self.stride < 1:
            raise ValueError(f"data.heatmap_stride must be an integer >= 1, got {self.stride!r}")
        if not self.sigma > 0:
            raise ValueError(f"data.heatmap_sigma must be > 0, got {self.sigma!r}")

    def grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Heat-map (rows, cols) for an image of (height, width) pixels."""
        h, w = image_size
        if h % self.stride or w % self.stride:
            raise ValueError(f"image size {h}x{w} is not a multiple of data.heatmap_stride {self.stride}; "
                             "choose a stride that divides data.height and data.width")
        return h // self.stride, w // self.stride

    def render(self, points: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        return render_heatmaps(points, self.grid(image_size), self.stride, self.sigma)


@dataclass(frozen=True)
class KeypointInputs:
    """What a dataset needs to add heat-maps to its items: one (17, 3) row per sample, in training-size pixels."""

    points: np.ndarray  # (N, 17, 3) float32
    spec: HeatmapSpec

    @classmethod
    def from_file(cls, path: str | Path, samples: Sequence, root: str | Path, size: tuple[int, int],
                  spec: HeatmapSpec) -> KeypointInputs:
        spec.grid(size)  # a size the stride does not divide fails before any file is read
        return cls(KeypointTable.load(path).for_samples(samples, root, size), spec)
