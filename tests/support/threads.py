"""One torch intra-op thread for tests of small tensors: on a shared 2-core box two threads spin
against each other (forward passes of the tiny test models run up to 10x slower)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Autouse where a conftest imports it: torch on one thread for each test, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
