"""The network as others use it: a uint8 image batch in, logits out, the normalisation inside.

What a logged or registered model takes (`phiscale.tracking.models`): `(N, 3, H, W)` uint8 at the
eval resolution, as decoded images are, so a user needs neither phiscale nor the training's
mean and std (0-255 units, `conf/data/*.yaml`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class UInt8Classifier(nn.Module):
    """`network` behind `(images - mean) / std`, for uint8 `(N, 3, H, W)` images (0-255 units)."""

    def __init__(self, network: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images.float() - self.mean) / self.std)


def to_uint8(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo a loader's `(x - mean) / std` on decoded uint8 images: the exact uint8 pixels again."""
    m = torch.tensor([float(v) for v in mean], device=images.device).view(1, -1, 1, 1)
    s = torch.tensor([float(v) for v in std], device=images.device).view(1, -1, 1, 1)
    return (images.float() * s + m).round().clamp(0, 255).to(torch.uint8).contiguous()
