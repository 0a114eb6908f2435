"""Decoded, resized uint8 images in one memory-mapped ``.npy`` file per (dataset, size).

Decoding JPEGs is most of a loader's work; with the cache an epoch reads
memory instead. The file name carries a digest of the size and the listing
(every path with its byte size and modification time), so a changed dataset
or size builds a new cache and the stale one is removed. The array is written
to a temporary file and renamed, so a crash never leaves a half cache that
looks valid.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from vireid.data.transforms import load_image
from vireid.utils.io import atomic_path


def default_cache_dir() -> Path:
    """``$VIREID_CACHE`` or ``$XDG_CACHE_HOME/vireid/images`` (``~/.cache`` by default)."""
    if os.environ.get("VIREID_CACHE"):
        return Path(os.environ["VIREID_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vireid" / "images"


def listing_digest(paths: Sequence[str], size: tuple[int, int]) -> str:
    """Changes whenever the size, the order, or any file's path, byte size or mtime changes."""
    digest = hashlib.sha256(f"{size[0]}x{size[1]}\n".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class ImageCache:
    """Read-only view of a cache file: ``cache[i]`` is image i as uint8 (3, H, W)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.array = np.load(self.path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.array[index])).permute(2, 0, 1)

    def __getstate__(self):  # DataLoader workers reopen the map instead of pickling it
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    @classmethod
    def build(cls, paths: Sequence[str], size: tuple[int, int], name: str, cache_dir: str | Path | None = None,
              workers: int | None = None, progress: bool = False, resample: str = "lanczos",
              depth: tuple[str, int] = ("minmax", 16)) -> ImageCache:
        """Open the cache for this listing, size and resize filter, decoding every image first if needed."""
        if not paths:
            raise ValueError(f"cannot cache an empty listing for {name!r}")
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        stem = f"{name}-{size[0]}x{size[1]}" + ("" if resample == "lanczos" else f"-{resample}") \
            + ("" if tuple(depth) == ("minmax", 16) else f"-{depth[0]}{depth[1]}")
        target = folder / f"{stem}-{listing_digest(paths, size)}.npy"
        if not target.is_file():
            _write(target, paths, size, workers, progress, resample, depth)
            for stale in folder.glob(f"{stem}-*.npy"):
                digest = stale.name[len(stem) + 1:-4]  # only this stem's own older listings, not "-bilinear"
                if stale != target and len(digest) == 16 and all(c in "0123456789abcdef" for c in digest):
                    stale.unlink(missing_ok=True)
        return cls(target)


def _write(target: Path, paths: Sequence[str], size: tuple[int, int], workers: int | None, progress: bool,
           resample: str = "lanczos", depth: tuple[str, int] = ("minmax", 16)) -> None:
    height, width = size
    with atomic_path(target) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), height, width, 3))
        decode = lambda path: load_image(path, size, resample, *depth).permute(1, 2, 0).numpy()  # noqa: E731
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            images = pool.map(decode, paths)
            if progress:
                from tqdm import tqdm

                images = tqdm(images, total=len(paths), unit="img", desc=f"cache {target.name}")
            for index, image in enumerate(images):
                array[index] = image
        array.flush()
        del array
