from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests use one torch thread: on a shared 2-core machine two threads are
    several times slower (oversubscription)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
