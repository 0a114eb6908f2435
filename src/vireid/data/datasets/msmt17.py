"""MSMT17 read from its list files (``list_{train,val,query,gallery}.txt``).

V1 keeps the images in ``train/`` and ``test/``; V2 (faces blurred) ships the
same lists with ``mask_train_v2/`` and ``mask_test_v2/``; the version is
picked by which training folder exists. Each list line is
``<person>/<file>.jpg <label>``; the camera (1-15) is the third
``_``-separated field of the file name (``vireid.data.layouts.MSMT_ENTRY``).

Training = ``list_train.txt`` only, as the AGW (ReID-Survey), reid-strong-
baseline and torchreid readers train (TransReID and fast-reid add
``list_val.txt``; its lines are checked here but not trained on). Labels
are 0-based within each split (train: 0..1040, test: 0..3059 on the real
set) and name different people in the two splits, so there is no train/test
identity-overlap check. Visible-light only: every sample gets ``VISIBLE``.
"""

from __future__ import annotations

from vireid.data import layouts
from vireid.data.datasets.base import Listing, VIReIDDataset, gap_notes
from vireid.data.datasets.market import query_gallery_notes
from vireid.data.records import VISIBLE, Sample


class MSMT17(VIReIDDataset):
    """MSMT17 (Wei et al., CVPR 2018): 4,101 identities from 15 cameras (1,041 train, 3,060 test)."""

    name = "msmt17"
    single_modality = True
    expected_layout = ("train/ and test/ (V1) or mask_train_v2/ and mask_test_v2/ (V2) with "
                       "list_train.txt, list_val.txt, list_query.txt and list_gallery.txt")

    def scan(self, problems: list[str]) -> Listing:
        listing = Listing()
        version = layouts.msmt_version(self.root) or "V1"
        self.version = version
        folders = {}
        for which, rel in zip(("train", "test"), layouts.MSMT_VERSIONS[version]):
            folders[which] = self.require_folder(rel, problems)
        entries = {}
        for part, rel in layouts.MSMT_LISTS.items():
            folder = folders["test" if part in ("query", "gallery") else "train"]
            path = self.require_file(rel, problems, "list file")
            entries[part] = [] if path is None or folder is None else layouts.read_msmt_list(path, folder, problems)
        listing.train = [Sample(p, label, cam, VISIBLE) for p, label, cam in entries["train"]]
        listing.test = [Sample(p, label, cam, VISIBLE) for p, label, cam in entries["query"] + entries["gallery"]]
        listing.test_ids = sorted({label for _, label, _ in entries["query"] + entries["gallery"]})
        listing.train_keys, listing.test_keys = {s.pid for s in listing.train}, set(listing.test_ids)
        shared = {p for p, _, _ in entries["train"]} & {p for p, _, _ in entries["val"]}
        if shared:
            problems.append(f"{len(shared)} images are in both list_train.txt and list_val.txt, "
                            f"e.g. {sorted(shared)[0]}")
        listing.notes.append(f"MSMT17 {version}: training on list_train.txt ({len(entries['train'])} images); "
                             f"list_val.txt ({len(entries['val'])} images) is checked, not trained on")
        listing.notes += gap_notes(listing.train, "list_train.txt")
        listing.notes += query_gallery_notes(entries["query"], entries["gallery"], special_ids=False)
        return listing
