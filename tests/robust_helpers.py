"""Shared by the issue-25 robustness tests: tiny training overrides and running ``vireid`` in a child process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TINY = ["data.height=32", "data.width=16", "data.p=2", "data.k=2", "data.workers=0", "data.cache=false",
        "model.depth=18", "train.epochs=1", "train.milestones=[]", "train.amp=off", "train.time_budget_s=0"]
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}  # this checkout's vireid


def vireid(*args) -> list[str]:
    """The argv that runs ``vireid ARGS`` in a fresh interpreter (with ``env=ENV``)."""
    return [sys.executable, "-c", "import sys; from vireid.cli.main import main; sys.exit(main(sys.argv[1:]))", *args]
