"""Your own data: ``<root>/<visible|infrared>/<person>/<image>``.

Optional camera ids: put a person's images in ``cam<K>/`` sub-folders
(``<root>/visible/0007/cam2/a.jpg``); images directly in the person folder
get ``NO_CAMERA`` and camera rules are off for them. Person folders are
relabelled 0..N-1 in sorted order (numerically when every name is a number),
the same label in both modalities. Everything is training data; evaluate
with a protocol built from your own query/gallery lists.
"""

from __future__ import annotations

import re
from pathlib import Path

from vireid.data.datasets.base import IMAGE_SUFFIXES, Listing, VIReIDDataset, modality_notes
from vireid.data.records import INFRARED, NO_CAMERA, VISIBLE, Sample

CAMERA_DIR = re.compile(r"^cam(\d+)$")
MODALITY_DIRS = (("visible", VISIBLE), ("infrared", INFRARED))


class FolderDataset(VIReIDDataset):
    """A user's visible/infrared images, one folder per person and modality."""

    name = "folder"
    expected_layout = "<root>/visible/<person>/[cam<K>/]<image> and <root>/infrared/<person>/[cam<K>/]<image>"

    def scan(self, problems: list[str]) -> Listing:
        listing = Listing()
        found: list[tuple[str, str, int, int]] = []  # (person, path, camid, modality)
        for word, modality in MODALITY_DIRS:
            top = self.require_folder(word, problems)
            if top is not None:
                found += self._images(top, modality, listing.notes)
        persons = sorted({person for person, *_ in found}, key=_person_order)
        label = {person: i for i, person in enumerate(persons)}
        listing.train = [Sample(path, label[person], cam, mod) for person, path, cam, mod in found]
        listing.train_keys = set(persons)
        listing.notes += modality_notes(listing.train)
        return listing

    def _images(self, top: Path, modality: int, notes: list[str]) -> list[tuple[str, str, int, int]]:
        found, skipped = [], []
        for person in sorted(p for p in top.iterdir() if p.is_dir()):
            for entry in sorted(person.iterdir()):
                cam = CAMERA_DIR.match(entry.name) if entry.is_dir() else None
                files = sorted(entry.iterdir()) if cam else [entry]
                for path in files:
                    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                        found.append((person.name, str(path), int(cam.group(1)) if cam else NO_CAMERA, modality))
                    else:
                        skipped.append(path)
        if skipped:
            notes.append(f"{len(skipped)} entries under {top} are not images and were skipped, e.g. {skipped[0]}")
        return found


def _person_order(name: str):
    """Numeric order for numeric names ('2' < '10'), names otherwise."""
    return (0, int(name), name) if name.isdigit() else (1, 0, name)
