"""RegDB read from its ``idx/`` lists (``<relative path> <label>`` lines).

Each of the ten trials has its own train/test lists and its own trained
model; ``trial`` picks which one to train on. Labels in the lists are 0-based
within each split, so the train/test identity-overlap check compares the
person folders (``Visible/<person>/...``), not the labels. Visible images get
camera 1 and thermal images camera 2, as in the reference evaluation.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from vireid.data import layouts
from vireid.data.datasets.base import (
    Listing,
    VIReIDDataset,
    gap_notes,
    label_problems,
    modality_notes,
    overlap_problem,
)
from vireid.data.records import INFRARED, VISIBLE, Sample

MODALITIES = (("visible", VISIBLE, 1), ("thermal", INFRARED, 2))


class RegDB(VIReIDDataset):
    """RegDB (Nguyen et al., Sensors 2017): 412 ids x 10 visible + 10 thermal images, 10 random trials."""

    name = "regdb"
    expected_layout = "Visible/, Thermal/ and idx/{train,test}_{visible,thermal}_{1..10}.txt"

    def __init__(self, root, trial: int = 1):
        if trial not in layouts.REGDB_TRIALS:
            raise ValueError(f"RegDB trial must be 1..10, got {trial!r}")
        self.trial = trial
        super().__init__(root)

    def scan(self, problems: list[str]) -> Listing:
        listing = Listing()
        self.require_folder("Visible", problems)
        self.require_folder("Thermal", problems)
        for trial in layouts.REGDB_TRIALS:  # every trial is checked, one is loaded
            split = {name: self._read(name, trial, problems) for name in ("train", "test")}
            keys = {name: {k for k in map(person_key, (s.path for s in samples)) if k}
                    for name, samples in split.items()}
            overlap = overlap_problem(keys["train"], keys["test"], f"RegDB trial {trial}, by person folder")
            if overlap:
                problems.append(overlap)
            shared = {s.path for s in split["train"]} & {s.path for s in split["test"]}
            if shared:
                problems.append(f"{len(shared)} images are in both the train and the test lists of RegDB trial "
                                f"{trial}, e.g. {sorted(shared)[0]}")
            for name, samples in split.items():
                problems += label_problems(samples, person_key, f"the RegDB trial {trial} {name} lists")
            if trial == self.trial:
                listing.train, listing.test = split["train"], split["test"]
                listing.train_keys, listing.test_keys = keys["train"], keys["test"]
        listing.test_ids = sorted({s.pid for s in listing.test})
        listing.notes += gap_notes(listing.train, f"idx/train_*_{self.trial}.txt") + modality_notes(listing.train)
        return listing

    def _read(self, split: str, trial: int, problems: list[str]) -> list[Sample]:
        samples = []
        for word, modality, camid in MODALITIES:
            path = self.require_file(f"idx/{split}_{word}_{trial}.txt", problems, "index list")
            if path is None:
                continue
            for rel, label in layouts.read_index_list(path, problems):
                image = self.root / rel
                if not image.is_file():
                    problems.append(f"{path}: entry {rel!r} points to a missing image {image}")
                    continue
                samples.append(Sample(str(image), label, camid, modality))
        return samples


def person_key(path: str) -> str | None:
    """'.../Visible/12/x.bmp' -> '12': the original person number, shared by both modalities."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if len(parts) >= 3 and parts[-3] in ("Visible", "Thermal"):
        return parts[-2]
    return None
