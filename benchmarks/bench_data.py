"""Data pipeline throughput: synthetic generator, and the training loader with and without the image cache.

    PYTHONPATH=src python3 benchmarks/bench_data.py [--ids 60] [--workers 2] [--batches 60] [--repeats 3]

Loader numbers are images/s through a DataLoader (2 workers by default) with
the CAJ training augmentation (pad + crop + flip + normalise + channel random
erasing, and ChannelAdapGray for infrared) and the cross-modality sampler
(8 ids x 4 + 4), after a warm-up batch; the cache build time is reported
separately. Each figure is the median of ``--repeats`` runs (the machine
may be shared; the spread is printed too). "batched" runs the same augmentation once per batch in the main
process on uint8 images from the cache (what a GPU run would do on device).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vireid.data.cache import ImageCache
from vireid.data.channel_aug import train_transform
from vireid.data.datasets import open_dataset
from vireid.data.image_dataset import ImageDataset
from vireid.data.records import INFRARED, VISIBLE
from vireid.data.samplers import CrossModalityIdentitySampler
from vireid.synth.generator import generate


def bench_generator(out: Path, ids: int, size: tuple[int, int], workers: int) -> float:
    start = time.perf_counter()
    summary = generate(out, "sysu", ids, seed=0, size=size, workers=workers)
    return summary["images"] / (time.perf_counter() - start)


def bench_loader(dataset: ImageDataset, train, workers: int, batches: int, batched: bool = False) -> float:
    sampler = CrossModalityIdentitySampler(train, 8, 4, seed=0, with_seeds=not batched)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, persistent_workers=False)
    vis, ir = train_transform("visible"), train_transform("infrared")
    generator = torch.Generator().manual_seed(0)
    seen, start = 0, None
    for number, (images, _pids, _camids, _modalities) in enumerate(loader):
        if batched:
            half = len(images) // 2  # the sampler puts visible first, then infrared
            images = torch.cat([vis(images[:half], generator), ir(images[half:], generator)])
        if number == 0:  # warm-up: worker start and first fetch
            start = time.perf_counter()
            continue
        seen += len(images)
        if number >= batches:
            break
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ids", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", default="288x144", help="size of the generated JPEGs for the loader test")
    parser.add_argument("--train-size", default="288x144", help="training input size (height x width)")
    args = parser.parse_args()
    image_size = tuple(int(v) for v in args.image_size.split("x"))
    train_size = tuple(int(v) for v in args.train_size.split("x"))
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        def report(label: str, runs: list[float]) -> None:
            runs = sorted(runs)
            print(f"{label}: {runs[len(runs) // 2]:.0f} images/s (runs: {', '.join(f'{r:.0f}' for r in runs)})")

        report(f"generator, 128x64, {args.workers} workers",
               [bench_generator(tmp / f"small{r}", args.ids, (128, 64), args.workers) for r in range(args.repeats)])
        report(f"generator, {args.image_size}, {args.workers} workers",
               [bench_generator(tmp / f"big{r}", args.ids, image_size, args.workers) for r in range(args.repeats)])

        train = open_dataset("sysu", tmp / "big0").train
        transform = {VISIBLE: train_transform("visible"), INFRARED: train_transform("infrared")}
        plain = ImageDataset(train, train_size, transform)
        report(f"loader, decode JPEG + resize + CAJ augmentation, {args.workers} workers",
               [bench_loader(plain, train, args.workers, args.batches) for _ in range(args.repeats)])

        start = time.perf_counter()
        cache = ImageCache.build([s.path for s in train], train_size, "bench", tmp / "cache")
        print(f"cache build, {len(train)} images at {args.train_size}: {time.perf_counter() - start:.1f} s")
        cached = ImageDataset(train, train_size, transform, cache=cache)
        report(f"loader, cache + CAJ augmentation, {args.workers} workers",
               [bench_loader(cached, train, args.workers, args.batches) for _ in range(args.repeats)])
        raw = ImageDataset(train, train_size, None, cache=cache)
        report(f"loader, cache + batched CAJ augmentation in the main process, {args.workers} workers",
               [bench_loader(raw, train, args.workers, args.batches, batched=True) for _ in range(args.repeats)])


if __name__ == "__main__":
    main()
