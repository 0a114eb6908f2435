"""SYSU-MM01 read from its distributed folders (no .npy pre-processing step).

Training = train + val ids (395 on the real set), relabelled 0..N-1 by
ascending pid; visible cams 1,2,4,5, infrared cams 3,6. Query/gallery
selection is the evaluation protocols' job (``vireid.evaluation.protocols``);
here the test split is every image of the test ids, for counting and checking.
"""

from __future__ import annotations

import re

from vireid.data import layouts
from vireid.data.datasets.base import Listing, VIReIDDataset, modality_notes, overlap_problem
from vireid.data.records import INFRARED, VISIBLE, Sample

FILE_NAME = re.compile(r"^\d{4}\.jpg$")


class SYSUMM01(VIReIDDataset):
    """SYSU-MM01 (Wu et al., ICCV 2017): 491 ids, 4 visible + 2 near-infrared cameras."""

    name = "sysu"
    expected_layout = "cam1..cam6/<pid:04d>/<n:04d>.jpg and exp/{train,val,test}_id.txt"

    def scan(self, problems: list[str]) -> Listing:
        listing = Listing()
        cams = [c for c in range(1, 7) if self.require_folder(f"cam{c}", problems)]
        ids = {name: self._ids(name, problems) for name in ("train", "val", "test")}
        if not (self.root / "exp" / "rand_perm_cam.mat").is_file():
            listing.notes.append(f"{self.root / 'exp' / 'rand_perm_cam.mat'} not found: the official-split "
                                 "protocols (sysu/*/*/official) need it; the seeded ones do not")
        train_ids = sorted(set(ids["train"]) | set(ids["val"]))
        images = {pid: self._images(pid, cams, problems) for pid in sorted(set(train_ids) | set(ids["test"]))}
        present = [pid for pid in train_ids if images[pid]]
        label = {pid: i for i, pid in enumerate(present)}
        for pid in present:
            listing.train += [Sample(p, label[pid], cam, mod) for p, cam, mod in images[pid]]
        missing = [pid for pid in train_ids if not images[pid]]
        if missing:
            listing.notes.append(f"{len(missing)} train/val identities have no images: "
                                 f"{', '.join(map(str, missing[:20]))}")
        for pid in ids["test"]:
            listing.test += [Sample(p, pid, cam, mod) for p, cam, mod in images[pid]]
        listing.test_ids = sorted(ids["test"])
        listing.train_keys, listing.test_keys = set(train_ids), set(ids["test"])
        overlap = overlap_problem(listing.train_keys, listing.test_keys,
                                  "exp/train_id.txt + exp/val_id.txt vs exp/test_id.txt")
        if overlap:
            problems.append(overlap)
        listing.notes += modality_notes(listing.train)
        return listing

    def _ids(self, name: str, problems: list[str]) -> list[int]:
        path = self.require_file(f"exp/{name}_id.txt", problems, "identity list")
        if path is None:
            return []
        try:
            return layouts.read_id_line(path)
        except ValueError as exc:
            problems.append(str(exc))
            return []

    def _images(self, pid: int, cams: list[int], problems: list[str]) -> list[tuple[str, int, int]]:
        """(path, cam, modality) of one identity: visible cams 1,2,4,5 then infrared 3,6, files sorted."""
        found = []
        for cam in layouts.SYSU_VISIBLE_CAMS + layouts.SYSU_INFRARED_CAMS:
            folder = self.root / f"cam{cam}" / f"{pid:04d}"
            if cam not in cams or not folder.is_dir():
                continue
            modality = VISIBLE if cam in layouts.SYSU_VISIBLE_CAMS else INFRARED
            for name in layouts.sorted_names(folder):
                if not FILE_NAME.match(name):
                    problems.append(f"unexpected file {folder / name}: SYSU-MM01 images are named NNNN.jpg "
                                    "(the reference parses camera and pid from fixed offsets)")
                    continue
                found.append((str(folder / name), cam, modality))
        return found
