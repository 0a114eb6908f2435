import importlib
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def golden_root() -> Path:
    """``$VIREID_GOLDEN`` or ``../shared/golden`` next to the checkout."""
    return Path(os.environ.get("VIREID_GOLDEN", REPO.parent / "shared" / "golden"))


def optional(module: str):
    """``import module`` for a test of an optional extra (faiss, onnx, matplotlib, scipy...).

    Skipped where the extra is not installed, except under CI (``CI`` set, as ``.ci/run`` runs): CI installs
    every extra, so a missing one there is a failure, never a silently skipped test.
    """
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    root = golden_root()
    if not root.is_dir():
        pytest.fail(f"golden vectors not found at {root}; set VIREID_GOLDEN")
    return root


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tests use tiny tensors: one torch thread is faster, and on a busy 2-core
    machine a second OpenMP thread mostly spin-waits (tiny steps ran ~50x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


from data_trees import tiny_trees  # noqa: E402,F401  (the session fixture, shared by every data test)
