"""Fixed in-memory batches for tests that drive a real Trainer without a dataset."""

from __future__ import annotations

import torch


class FixedBatches:
    """The same (images, labels) batches every epoch; one loader to Lightning (a plain list would be
    read as a list of loaders)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)
