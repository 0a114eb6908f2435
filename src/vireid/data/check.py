"""Dataset root checks shared by `vireid data check` and training.

A broken root is reported completely (every missing folder or list with the
path expected, every list line that does not parse, every image that does
not decode, any train/test identity overlap), so a user fixes it in one go;
training calls :func:`require_valid` and refuses with the same messages.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vireid.data.datasets import VIReIDDataset, open_dataset
from vireid.data.datasets.base import count_table


class DatasetError(ValueError):
    """A dataset root that fails the checks; the message lists every problem."""


@dataclass
class CheckReport:
    dataset: VIReIDDataset
    problems: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        d = self.dataset
        head = f"{d.name} dataset at {d.root}" + (f" (trial {d.trial})" if hasattr(d, "trial") else "")
        if not self.ok:
            lines = [f"{head}: {len(self.problems)} problem(s) found"]
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines = [f"{head}: OK, {d.num_classes} training identities, {len(d.test_ids)} test identities",
                     _table(self.rows)]
        lines += [f"note: {n}" for n in d.listing.notes]
        return "\n".join(lines)


def _table(rows: list[tuple]) -> str:
    header = ("split", "modality", "camera", "ids", "images")
    cells = [header] + [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in cells)


def undecodable(paths: list[str], workers: int = 4, progress: bool = False) -> list[str]:
    """One problem per image that Pillow cannot fully decode (truncated, not an image, unreadable)."""

    def probe(path: str) -> str | None:
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the finding
            return f"cannot decode image {path}: {type(exc).__name__}: {exc}"
        return None

    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(probe, paths)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), unit="img", desc="decode")
        return [r for r in results if r]


def check_dataset(root: str | Path, name: str, decode: bool = True, progress: bool = False,
                  **options) -> CheckReport:
    """Read ``root`` as dataset ``name`` and collect every problem; ``decode`` also opens every image."""
    dataset = open_dataset(name, root, **options)
    report = CheckReport(dataset, list(dataset.problems))
    samples = dataset.listing.train + dataset.listing.test
    if decode and samples:
        report.problems += undecodable([s.path for s in samples], progress=progress)
    if dataset.root.is_dir() and not dataset.listing.train:
        report.problems.append(f"no training images found under {dataset.root} "
                               f"({name} expects {dataset.expected_layout})")
    report.rows = count_table(dataset.listing.train, dataset.listing.test)
    return report


def require_valid(root: str | Path, name: str, decode: bool = False, **options) -> VIReIDDataset:
    """The dataset, or a :class:`DatasetError` listing every problem (what training calls)."""
    report = check_dataset(root, name, decode=decode, **options)
    if not report.ok:
        raise DatasetError(report.format())
    return report.dataset
