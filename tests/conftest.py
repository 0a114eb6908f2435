import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def golden_root() -> Path:
    """``$VIREID_GOLDEN`` or ``../shared/golden`` next to the checkout."""
    return Path(os.environ.get("VIREID_GOLDEN", REPO.parent / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    root = golden_root()
    if not root.is_dir():
        pytest.fail(f"golden vectors not found at {root}; set VIREID_GOLDEN")
    return root
