"""Facts about the on-disk layouts of SYSU-MM01, RegDB and LLCM, and their list files.

Both the dataset readers (training side) and the evaluation protocols (test
side) read the same files; the parsing lives here once, with errors that name
the file and line.
"""

from __future__ import annotations

import os
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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"index list not found: {path}")
    entries: list[tuple[str, int]] = []
    with path.open("r", encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            rel, _, label = line.partition(" ")
            try:
                entries.append((rel, int(label.strip())))
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
