"""Dataset root checks shared by `vireid data check` and training.

A broken root is reported completely (every missing folder or list with the
path expected, every list line that does not parse, every image that does
not decode, any train/test identity overlap), so a user fixes it in one go;
training calls :func:`require_valid` and refuses with the same messages.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from vireid.data.datasets import VIReIDDataset, open_dataset
from vireid.data.datasets.base import count_table
from vireid.data.image_file import UnreadableImage, open_image, probe
from vireid.data.records import Sample

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset root that fails the checks; the message lists every problem."""


@dataclass
class CheckReport:
    dataset: VIReIDDataset
    problems: list[str] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)  # "MODE B-bit" -> images (when decoded)

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
        if self.formats:
            lines.append("image formats: " + ", ".join(f"{k}: {n}" for k, n in sorted(self.formats.items())))
            if any(not k.endswith(" 8-bit") and not k.endswith(" 1-bit") for k in self.formats):
                lines.append("note: images deeper than 8 bits are scaled to 8 bits by data.depth_rule (minmax: "
                             "per image; fixed: by data.depth_bits), in training and in extraction alike")
        lines += [f"note: {n}" for n in d.listing.notes]
        return "\n".join(lines)


def _table(rows: list[tuple]) -> str:
    header = ("split", "modality", "camera", "ids", "images")
    cells = [header] + [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in cells)


def undecodable(paths: list[str], workers: int = 4, progress: bool = False,
                formats: Counter | None = None) -> list[str]:
    """One problem per image the policy of :mod:`vireid.data.image_file` refuses (truncated, not an image,
    a FIFO, a decompression bomb); ``formats`` counts the modes and bit depths of the others."""
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(probe, paths)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), unit="img", desc="decode")
        problems = []
        for problem, kind in results:
            if problem:
                problems.append(problem)
            elif formats is not None:
                formats[kind] += 1
        return problems


def header_problem(path: str) -> str | None:
    """The policy's checks that need no decoding (file kind, size, header, pixel count): a problem or None."""
    try:
        with open_image(path):
            return None
    except UnreadableImage as exc:
        return str(exc)


def usable_samples(samples: list[Sample], strict: bool = False, workers: int = 4) -> list[Sample]:
    """Training's share of the image policy: files that fail :func:`header_problem` are skipped and listed
    as a warning with ``data check``'s messages, or, with ``strict``, refused with all of them listed."""
    with ThreadPoolExecutor(workers) as pool:
        problems = list(pool.map(header_problem, [s.path for s in samples]))
    bad = [p for p in problems if p]
    if not bad:
        return list(samples)
    listing = "\n".join(f"  - {p}" for p in bad)
    if strict:
        raise DatasetError(f"{len(bad)} training image(s) cannot be read (--strict stops here):\n{listing}")
    kept = [s for s, p in zip(samples, problems) if not p]
    lost = sorted({s.pid for s in samples} - {s.pid for s in kept})
    if lost:
        raise DatasetError(f"training identities {lost} have no readable image left; fix or remove these "
                           f"files:\n{listing}")
    log.warning("skipping %d training image(s) that cannot be read (run 'vireid data check' for the full "
                "report; --strict refuses instead):\n%s", len(bad), listing)
    return kept


def check_dataset(root: str | Path, name: str, decode: bool = True, progress: bool = False,
                  **options) -> CheckReport:
    """Read ``root`` as dataset ``name`` and collect every problem; ``decode`` also opens every image."""
    dataset = open_dataset(name, root, **options)
    report = CheckReport(dataset, list(dataset.problems))
    samples = dataset.listing.train + dataset.listing.test
    if decode and samples:
        report.problems += undecodable([s.path for s in samples], progress=progress, formats=report.formats)
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
