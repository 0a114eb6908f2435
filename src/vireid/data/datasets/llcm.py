"""LLCM read from its ``idx/`` lists and ``test_vis/``, ``test_nir/`` folders.

Training samples come from ``idx/train_vis.txt`` and ``idx/train_nir.txt``
(labels as listed); the camera is the digit after the first "cam" in the
path, as in the reference. The test split is every image of the test ids in
the cameras the reference reads (NIR cam 3 is never read; on the real set it
is empty).
"""

from __future__ import annotations

import os
import re

from vireid.data import layouts
from vireid.data.datasets.base import (
    Listing,
    VIReIDDataset,
    gap_notes,
    label_problems,
    modality_notes,
    overlap_problem,
)
from vireid.data.records import INFRARED, NO_CAMERA, VISIBLE, Sample

CAM_AND_PID = re.compile(r"cam(\d)[/\\](\d{4})")


def parse_cam_pid(path: str) -> tuple[int, int] | None:
    """Camera and pid from the text after the first 'cam' (None when it is not 'camK/PPPP')."""
    index = path.find("cam")
    match = CAM_AND_PID.match(path, index) if index >= 0 else None
    return (int(match.group(1)), int(match.group(2))) if match else None


class LLCM(VIReIDDataset):
    """LLCM (Zhang & Wang, CVPR 2023): 1,064 ids from 9 cameras, visible by day and near-infrared by night."""

    name = "llcm"
    expected_layout = ("idx/{train_vis,train_nir}.txt, idx/test_id.txt, "
                       "test_vis/camK/<pid:04d>/ and test_nir/camK/<pid:04d>/")

    def scan(self, problems: list[str]) -> Listing:
        listing = Listing()
        for word, modality in (("vis", VISIBLE), ("nir", INFRARED)):
            listing.train += self._read(f"idx/train_{word}.txt", modality, problems)
        listing.test_ids = self._test_ids(problems)
        listing.test = self._test_images(listing.test_ids, problems)
        listing.train_keys = {pid for pid in map(self._pid_of, (s.path for s in listing.train)) if pid is not None}
        listing.test_keys = set(listing.test_ids)
        overlap = overlap_problem(listing.train_keys, listing.test_keys,
                                  "pid folders of idx/train_*.txt vs idx/test_id.txt")
        if overlap:
            problems.append(overlap)
        problems += label_problems(listing.train, self._pid_of, "idx/train_vis.txt + idx/train_nir.txt")
        listing.notes += gap_notes(listing.train, "idx/train_*.txt") + modality_notes(listing.train)
        return listing

    def _pid_of(self, path: str) -> int | None:
        """The pid folder of a listed image, read from its path relative to the root (the root may contain 'cam')."""
        cam_pid = parse_cam_pid(os.path.relpath(path, self.root))
        return cam_pid[1] if cam_pid else None

    def _read(self, rel: str, modality: int, problems: list[str]) -> list[Sample]:
        path = self.require_file(rel, problems, "index list")
        if path is None:
            return []
        samples = []
        for entry, label in layouts.read_index_list(path, problems):
            image = self.root / entry
            if not image.is_file():
                problems.append(f"{path}: entry {entry!r} points to a missing image {image}")
                continue
            cam_pid = parse_cam_pid(entry)
            samples.append(Sample(str(image), label, cam_pid[0] if cam_pid else NO_CAMERA, modality))
        return samples

    def _test_ids(self, problems: list[str]) -> list[int]:
        path = self.require_file("idx/test_id.txt", problems, "identity list")
        if path is None:
            return []
        try:
            return sorted(layouts.read_id_line(path))
        except ValueError as exc:
            problems.append(str(exc))
            return []

    def _test_images(self, test_ids: list[int], problems: list[str]) -> list[Sample]:
        samples = []
        for folder, cams, modality in ((layouts.LLCM_VISIBLE_DIR, layouts.LLCM_VISIBLE_CAMS, VISIBLE),
                                       (layouts.LLCM_INFRARED_DIR, layouts.LLCM_INFRARED_CAMS, INFRARED)):
            if self.require_folder(folder, problems) is None:
                continue
            for pid in test_ids:
                for cam in cams:
                    person = self.root / folder / f"cam{cam}" / f"{pid:04d}"
                    if person.is_dir():
                        samples += [Sample(str(person / name), pid, cam, modality)
                                    for name in layouts.sorted_names(person)]
        return samples
