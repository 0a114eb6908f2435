"""Facts about the on-disk layouts of SYSU-MM01, RegDB, LLCM, Market-1501, DukeMTMC-reID and MSMT17.

Both the dataset readers (training side) and the evaluation protocols (test
side) read the same files; the parsing lives here once, with errors that name
the file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

SYSU_VISIBLE_CAMS = (1, 2, 4, 5)
SYSU_INFRARED_CAMS = (3, 6)
SYSU_GALLERY_CAMS = {"all": (1, 2, 4, 5), "indoor": (1, 2)}

LLCM_VISIBLE_DIR = "test_vis"
LLCM_INFRARED_DIR = "test_nir"
LLCM_VISIBLE_CAMS = (1, 2, 3, 4, 5, 6, 7, 8, 9)
LLCM_INFRARED_CAMS = (1, 2, 4, 5, 6, 7, 8, 9)  # the reference never reads test_nir/cam3

REGDB_TRIALS = tuple(range(1, 11))


def read_id_line(path: str | Path) -> list[int]:
    """Identity ids from the first line of a SYSU/LLCM id file ('1,2,3').

    The reference reads only the first line; we do the same but refuse a
    line that does not parse, naming the file and the offending token.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"identity list not found: {path}")
    with path.open("r", encoding="utf-8") as handle:
        line = handle.readline().strip()
    if not line:
        raise ValueError(f"{path}:1: empty identity list; expected comma-separated integers")
    ids = []
    for token in line.split(","):
        token = token.strip()
        if not token:
            continue
        try:
            ids.append(int(token))
        except ValueError:
            raise ValueError(
                f"{path}:1: identity {token!r} is not an integer; expected comma-separated integers"
            ) from None
    return ids


def read_index_list(
    path: str | Path, problems: list[str] | None = None
) -> list[tuple[str, int]]:
    """Entries of a RegDB/LLCM index file: lines '<relative path> <integer label>'.

    The path is split off at the first space, as in the reference. With
    ``problems`` given, bad lines are recorded there (as 'file:line: ...') and
    skipped, so a checker can report every problem at once; without it the
    first bad line raises ``ValueError``.
    """
    return [(rel, label) for _, rel, label in read_numbered_index_list(path, problems)]


def read_numbered_index_list(
    path: str | Path, problems: list[str] | None = None
) -> list[tuple[int, str, int]]:
    """:func:`read_index_list` with the 1-based line number of each entry, for 'file:line' messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index list not found: {path}")
    entries: list[tuple[int, str, int]] = []
    with path.open("r", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            rel, _, label = line.partition(" ")
            try:
                entries.append((number, rel, int(label.strip())))
            except ValueError:
                message = (
                    f"{path}:{number}: cannot parse {line!r}; expected '<relative path> <integer label>'"
                )
                if problems is None:
                    raise ValueError(message) from None
                problems.append(message)
    return entries


def sorted_names(folder: Path) -> list[str]:
    """Entry names of a folder sorted as strings.

    The reference sorts full paths; with one shared prefix that is the same
    order. Every entry counts (a stray non-image file would be drawn too).
    """
    return sorted(os.listdir(folder))


# ---------------------------------------------------------------- single-modality re-ID sets
#
# Market-1501 and DukeMTMC-reID keep identity and camera in the file name of
# every image in three flat folders; MSMT17 lists its images in text files.
# All three are visible-light only.

JUNK_PID = -1  # Market-1501: bad detections, ignored by the evaluation (never a match, never a negative)
DISTRACTOR_PID = 0  # Market-1501 "0000": people outside the identity set, kept in the gallery as negatives
SINGLE_FOLDERS = {"train": "bounding_box_train", "gallery": "bounding_box_test", "query": "query"}


@dataclass(frozen=True)
class NameFormat:
    """How a dataset names its image files: the regex (groups: pid, camera), the pattern in words, the cameras."""

    dataset: str
    regex: re.Pattern
    pattern: str
    cameras: tuple[int, ...]

    def parse(self, name: str) -> tuple[int, int]:
        """(pid, camera) of a file name, or ``ValueError`` naming the name and the expected pattern."""
        match = self.regex.match(name)
        if not match:
            raise ValueError(f"file name {name!r} does not match the {self.dataset} pattern {self.pattern}")
        pid, cam = int(match.group(1)), int(match.group(2))
        if cam not in self.cameras:
            raise ValueError(f"file name {name!r} names camera {cam}; {self.dataset} has cameras "
                             f"{self.cameras[0]}-{self.cameras[-1]}")
        return pid, cam


# 0002_c1s1_000451_03.jpg: person (4 digits, or -1 = junk), camera 1-6, sequence, frame (6 digits), box number.
MARKET_NAMES = NameFormat("Market-1501", re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$"),
                          "PPPP_cCsS_FFFFFF_NN.jpg (person, camera 1-6, sequence, frame, box; person -1 = junk)",
                          (1, 2, 3, 4, 5, 6))
# 0001_c2_f0046182.jpg: person (4 digits), camera 1-8, frame (7 digits). The real set has no junk or 0000
# images (its distractors are gallery-only identities); -1 is accepted with Market's meaning all the same.
DUKE_NAMES = NameFormat("DukeMTMC-reID", re.compile(r"^(-1|\d{4})_c(\d)_f(\d{7})\.jpg$"),
                        "PPPP_cC_fFFFFFFF.jpg (person, camera 1-8, frame)", (1, 2, 3, 4, 5, 6, 7, 8))
# MSMT17 list entry 0000/0000_000_01_0303morning_0015_0.jpg: <person folder>/<person>_<running number within
# the person>_<camera 01-15>_<capture date and time of day>_... ; only the camera is read, as the third
# '_'-separated field of the entry (int(path.split('_')[2]) in torchreid's and ReID-Survey's readers).
MSMT_ENTRY = re.compile(r"^(\d{4})/\1_(\d{3})_(\d{2})_[^/]+\.jpg$")
MSMT_ENTRY_PATTERN = "PPPP/PPPP_SSS_CC_<date><time>_<frame>_<n>.jpg (person folder, camera CC 01-15)"
MSMT_CAMERAS = tuple(range(1, 16))
# V1 ships train/ and test/; V2 (faces blurred) the same lists with mask_train_v2/ and mask_test_v2/.
MSMT_VERSIONS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
MSMT_LISTS = {"train": "list_train.txt", "val": "list_val.txt", "query": "list_query.txt",
              "gallery": "list_gallery.txt"}


def scan_named_images(folder: Path, names: NameFormat, problems: list[str] | None = None,
                      skipped: list[str] | None = None) -> list[tuple[str, int, int]]:
    """(path, pid, camera) of every ``.jpg`` in ``folder``, sorted by name.

    Other files (the real Market-1501 folders hold a ``Thumbs.db``) are not
    images of the set: they go to ``skipped``, as the references read only
    ``*.jpg``. A ``.jpg`` whose name does not parse is a problem (collected in
    ``problems``, or raised without it).
    """
    found = []
    for name in sorted_names(folder):
        if not name.lower().endswith(".jpg"):
            if skipped is not None:
                skipped.append(str(folder / name))
            continue
        try:
            pid, cam = names.parse(name)
        except ValueError as exc:
            if problems is None:
                raise ValueError(f"{folder / name}: {exc}") from None
            problems.append(f"{folder / name}: {exc}")
            continue
        found.append((str(folder / name), pid, cam))
    return found


def msmt_version(root: Path) -> str | None:
    """'V1' or 'V2' by which image folders exist under ``root`` (None when neither does)."""
    for version, (train, _) in MSMT_VERSIONS.items():
        if (Path(root) / train).is_dir():
            return version
    return None


def read_msmt_list(path: Path, image_dir: Path, problems: list[str] | None = None) -> list[tuple[str, int, int]]:
    """(image path, label, camera) of every entry of an MSMT17 list file, checked line by line.

    A line that does not parse, an entry that does not follow the naming
    pattern, a label that differs from the person folder, and an entry whose
    image is missing are each reported as ``file:line`` (collected in
    ``problems``, or raised without it).
    """
    out = []
    for number, rel, label in read_numbered_index_list(path, problems):
        match = MSMT_ENTRY.match(rel)
        message = None
        if not match:
            message = f"{path}:{number}: entry {rel!r} does not match the MSMT17 pattern {MSMT_ENTRY_PATTERN}"
        elif int(match.group(3)) not in MSMT_CAMERAS:
            message = f"{path}:{number}: entry {rel!r} names camera {int(match.group(3))}; MSMT17 has cameras 1-15"
        elif int(match.group(1)) != label:
            message = (f"{path}:{number}: entry {rel!r} has label {label} but lives in person folder "
                       f"{match.group(1)}; MSMT17 labels are the person folder numbers")
        elif not (image_dir / rel).is_file():
            message = f"{path}:{number}: entry {rel!r} points to a missing image {image_dir / rel}"
        if message is not None:
            if problems is None:
                raise ValueError(message)
            problems.append(message)
            continue
        out.append((str(image_dir / rel), label, int(match.group(3))))
    return out
