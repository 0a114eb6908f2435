"""``metrics.jsonl`` after a resume: one line per step, as if the run had never stopped.

A run killed after its last checkpoint has already logged the steps it then
redoes after resuming, so without trimming those steps appear twice (and a
plot of the log draws the killed run's tail over the resumed run). On
resume the log is cut at its first record past the checkpoint's global step
(that record and everything after it are dropped), then training appends.
"""

from __future__ import annotations

import json
from pathlib import Path

from vireid.utils.io import write_text_atomic


def trim_after(path: str | Path, global_step: int) -> int:
    """Drop the records of ``path`` from the first one whose ``global_step`` exceeds ``global_step``; returns
    how many lines were dropped (0 when the file is absent or already consistent)."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for number, line in enumerate(lines):
        try:
            step = json.loads(line).get("global_step")
        except (ValueError, AttributeError):  # a torn last line of a killed write: cut there too
            step = global_step + 1
        if isinstance(step, int) and step > global_step:
            write_text_atomic(path, "".join(lines[:number]))
            return len(lines) - number
    return 0
