"""Market-1501 and DukeMTMC-reID read from their distributed folders.

Both ship ``bounding_box_train/`` (training), ``query/`` and
``bounding_box_test/`` (the gallery), one flat folder each, with identity and
camera in every file name (``vireid.data.layouts.MARKET_NAMES`` /
``DUKE_NAMES``). Only ``*.jpg`` files are images of the set, as in every
reference reader (the real folders also hold a ``Thumbs.db``). Training
identities are relabelled 0..N-1 in ascending order. Both sets are
visible-light only: every sample gets ``VISIBLE``.

Market-1501's gallery also holds junk images (person ``-1``: bad detections,
which the evaluation ignores) and distractors (person ``0000``: people outside
the identity set, kept as negatives); either in ``bounding_box_train/`` or
``query/`` is a problem. The test split (``listing.test``) is query then
gallery, junk and distractors included, for counting and decoding; the
query/gallery lists of an evaluation come from the ``market1501`` /
``dukemtmc`` protocols.
"""

from __future__ import annotations

from collections import Counter

from vireid.data import layouts
from vireid.data.datasets.base import Listing, VIReIDDataset, overlap_problem
from vireid.data.records import VISIBLE, Sample


class _NamedFolders(VIReIDDataset):
    """Shared reader of the three flat, name-labelled folders."""

    names: layouts.NameFormat
    single_modality = True
    expected_layout = "bounding_box_train/, query/ and bounding_box_test/ of *.jpg images"

    def scan(self, problems: list[str]) -> Listing:
        listing = Listing()
        skipped: list[str] = []
        found = {}
        for role, rel in layouts.SINGLE_FOLDERS.items():
            folder = self.require_folder(rel, problems)
            found[role] = [] if folder is None else layouts.scan_named_images(folder, self.names, problems, skipped)
        for role in ("train", "query"):
            odd = [path for path, pid, _ in found[role] if pid in (layouts.JUNK_PID, layouts.DISTRACTOR_PID)]
            if odd:
                problems.append(f"{len(odd)} junk (-1) or distractor (0000) images in "
                                f"{self.root / layouts.SINGLE_FOLDERS[role]}, e.g. {odd[0]}; they belong only in "
                                f"{layouts.SINGLE_FOLDERS['gallery']}/")
        real = {role: [(p, pid, cam) for p, pid, cam in items if pid not in (layouts.JUNK_PID, layouts.DISTRACTOR_PID)]
                for role, items in found.items()}
        train_ids = sorted({pid for _, pid, _ in real["train"]})
        label = {pid: i for i, pid in enumerate(train_ids)}
        listing.train = [Sample(p, label[pid], cam, VISIBLE) for p, pid, cam in real["train"]]
        listing.test = [Sample(p, pid, cam, VISIBLE) for p, pid, cam in found["query"] + found["gallery"]]
        listing.test_ids = sorted({pid for _, pid, _ in real["query"]} | {pid for _, pid, _ in real["gallery"]})
        listing.train_keys, listing.test_keys = set(train_ids), set(listing.test_ids)
        overlap = overlap_problem(listing.train_keys, listing.test_keys,
                                  f"{layouts.SINGLE_FOLDERS['train']}/ vs {layouts.SINGLE_FOLDERS['query']}/ + "
                                  f"{layouts.SINGLE_FOLDERS['gallery']}/, by person number")
        if overlap:
            problems.append(overlap)
        if skipped:
            listing.notes.append(f"{len(skipped)} files that are not .jpg images were skipped, e.g. {skipped[0]}")
        listing.notes += query_gallery_notes(real["query"], found["gallery"])
        return listing


def query_gallery_notes(query: list[tuple[str, int, int]], gallery: list[tuple[str, int, int]],
                        special_ids: bool = True) -> list[str]:
    """What the standard protocol will see: query and gallery sizes, and queries it must skip.

    ``special_ids``: person -1 is junk and 0 a distractor (Market-1501's
    naming); MSMT17's label 0 is an ordinary identity.
    """
    special = (layouts.JUNK_PID, layouts.DISTRACTOR_PID) if special_ids else ()
    kinds = Counter("junk" if pid == layouts.JUNK_PID and special else "distractor"
                    if pid == layouts.DISTRACTOR_PID and special else "id" for _, pid, _ in gallery)
    gallery_ids = {pid for _, pid, _ in gallery if pid not in special}
    notes = [f"query: {len(query)} images of {len({pid for _, pid, _ in query})} identities; gallery: "
             f"{len(gallery)} images of {len(gallery_ids)} identities"
             + (f" and {kinds['distractor']} distractors (0000, kept as negatives) and {kinds['junk']} junk "
                "images (-1, ignored by the protocol)" if special_ids else "")]
    cams: dict[int, set[int]] = {}
    for _, pid, cam in gallery:
        cams.setdefault(pid, set()).add(cam)
    lonely = [path for path, pid, cam in query if not cams.get(pid, set()) - {cam}]
    if lonely:
        notes.append(f"{len(lonely)} queries have no gallery image of their identity from another camera and are "
                     f"skipped by the protocol, e.g. {lonely[0]}")
    return notes


class Market1501(_NamedFolders):
    """Market-1501 (Zheng et al., ICCV 2015): 1,501 identities from 6 cameras (751 train, 750 test)."""

    name = "market1501"
    names = layouts.MARKET_NAMES
    expected_layout = ("bounding_box_train/, query/ and bounding_box_test/ of images named "
                       + layouts.MARKET_NAMES.pattern.split(" ")[0])


class DukeMTMC(_NamedFolders):
    """DukeMTMC-reID (Zheng et al., ICCV 2017): 1,404 identities from 8 cameras, 408 gallery-only distractors."""

    name = "dukemtmc"
    names = layouts.DUKE_NAMES
    expected_layout = ("bounding_box_train/, query/ and bounding_box_test/ of images named "
                       + layouts.DUKE_NAMES.pattern.split(" ")[0])
