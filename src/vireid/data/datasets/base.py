"""What every dataset reader produces: a listing of samples plus the problems found.

Readers never raise on a broken root: they collect every problem (with the
path they expected, or file:line) so `vireid data check` can show them all at
once; :func:`vireid.data.check.require_valid` turns them into one error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vireid.data.records import INFRARED, VISIBLE, Sample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Listing:
    """Training samples (pid = 0-based label), test-identity images, and identity keys for overlap checks."""

    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)
    test_ids: list[int] = field(default_factory=list)  # as the dataset numbers them (RegDB: test-list labels)
    train_keys: set = field(default_factory=set)  # original identities of the training split
    test_keys: set = field(default_factory=set)  # original identities of the test split
    notes: list[str] = field(default_factory=list)  # worth knowing, not fatal


class VIReIDDataset:
    """Base reader: subclasses implement ``scan(problems) -> Listing``."""

    name = ""
    expected_layout = ""
    single_modality = False  # True: visible images only (Market-1501, DukeMTMC-reID, MSMT17)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.problems: list[str] = []
        if not self.root.is_dir():
            self.problems.append(f"dataset root {self.root} is not a folder; expected {self.expected_layout}")
            self.listing = Listing()
        else:
            self.listing = self.scan(self.problems)

    def scan(self, problems: list[str]) -> Listing:
        raise NotImplementedError

    @property
    def train(self) -> list[Sample]:
        return self.listing.train

    @property
    def test(self) -> list[Sample]:
        """Every image of the test identities (query/gallery selection belongs to the protocols)."""
        return self.listing.test

    @property
    def test_ids(self) -> list[int]:
        return self.listing.test_ids

    @property
    def num_classes(self) -> int:
        """Classifier width: largest training label + 1 (lists may leave gaps; a note says so)."""
        return max((s.pid for s in self.listing.train), default=-1) + 1

    def require_folder(self, rel: str, problems: list[str]) -> Path | None:
        path = self.root / rel
        if not path.is_dir():
            problems.append(f"missing folder {path} ({self.name} expects {self.expected_layout})")
            return None
        return path

    def require_file(self, rel: str, problems: list[str], what: str) -> Path | None:
        path = self.root / rel
        if not path.is_file():
            problems.append(f"missing {what} {path} ({self.name} expects {self.expected_layout})")
            return None
        return path


def overlap_problem(train_keys: set, test_keys: set, where: str) -> str | None:
    both = sorted(train_keys & test_keys, key=str)
    if not both:
        return None
    shown = ", ".join(map(str, both[:20])) + (", ..." if len(both) > 20 else "")
    return f"{len(both)} identities are in both the training and the test split ({where}): {shown}"


def label_problems(samples: list[Sample], original: Callable[[str], object | None], where: str) -> list[str]:
    """Labels that name two people, or people with two labels: silent wrong labels otherwise.

    ``original`` gives the person a path belongs to (None when the path
    does not say); visible and infrared lists must agree on it.
    """
    people: dict[int, set] = {}
    labels: dict[object, set[int]] = {}
    for sample in samples:
        person = original(sample.path)
        if person is not None:
            people.setdefault(sample.pid, set()).add(person)
            labels.setdefault(person, set()).add(sample.pid)
    problems = [f"label {label} names several people in {where}: {', '.join(map(str, sorted(found, key=str)))}"
                for label, found in sorted(people.items()) if len(found) > 1]
    problems += [f"person {person} has several labels in {where}: {', '.join(map(str, sorted(found)))}"
                 for person, found in sorted(labels.items(), key=lambda item: str(item[0])) if len(found) > 1]
    return problems


def gap_notes(train: list[Sample], where: str) -> list[str]:
    used = {s.pid for s in train}
    missing = sorted(set(range(max(used, default=-1) + 1)) - used)
    if not missing:
        return []
    return [f"training labels in {where} are not 0..N-1: {len(missing)} unused below the largest "
            f"({', '.join(map(str, missing[:20]))}); the classifier still has {max(used) + 1} outputs"]


def modality_notes(train: list[Sample]) -> list[str]:
    """Identities that the cross-modality sampler cannot use (they lack one modality)."""
    seen: dict[int, set[int]] = {}
    for sample in train:
        seen.setdefault(sample.pid, set()).add(sample.modality)
    lonely = sorted(pid for pid, mods in seen.items() if mods != {VISIBLE, INFRARED})
    if not lonely:
        return []
    return [f"{len(lonely)} training labels have images of one modality only and are skipped by the "
            f"cross-modality sampler: {', '.join(map(str, lonely[:20]))}"]


def count_table(train: list[Sample], test: list[Sample]) -> list[tuple[str, str, str, int, int]]:
    """Rows (split, modality, camera, identities, images), camera 'all' per modality."""
    rows = []
    for split, samples in (("train", train), ("test", test)):
        for modality in (VISIBLE, INFRARED):
            chosen = [s for s in samples if s.modality == modality]
            if not chosen:
                continue
            cams = Counter(s.camid for s in chosen)
            if len(cams) > 1 or -1 not in cams:
                for cam in sorted(cams):
                    in_cam = [s for s in chosen if s.camid == cam]
                    rows.append((split, chosen[0].modality_name, str(cam) if cam >= 0 else "-",
                                 len({s.pid for s in in_cam}), len(in_cam)))
            rows.append((split, chosen[0].modality_name, "all", len({s.pid for s in chosen}), len(chosen)))
    return rows
