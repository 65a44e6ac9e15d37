"""Model tests run torch on one thread: the models here are tiny at test resolutions, and on a
shared CI box two intra-op threads spin against each other (10x slower forward passes)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
