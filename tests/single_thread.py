"""A module-scoped fixture running torch on one thread.

On two shared, busy CPU cores, OpenMP's second thread mostly waits: tiny
models then run ~50x slower than on one thread. Modules that train use it with
``from single_thread import one_thread  # noqa: F401``; it restores the thread count afterwards.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
