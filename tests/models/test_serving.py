"""The serving wrapper: uint8 images in, the network's logits on the normalised images out."""

from __future__ import annotations

import torch
from torch import nn

from phiscale.models.serving import UInt8Classifier, to_uint8

MEAN, STD = [79.0, 80.0, 81.0], [88.9, 60.0, 70.0]


def test_the_wrapper_normalises_like_the_loader_and_to_uint8_undoes_it_exactly():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    normalised = (images.float() - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(to_uint8(normalised, MEAN, STD), images), "decoded pixels must come back exactly"
    served = UInt8Classifier(network, MEAN, STD).eval()
    assert torch.allclose(served(images), network(normalised), atol=1e-6)


def test_it_exports_with_a_free_batch_dimension():
    network = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    served = UInt8Classifier(network, MEAN, STD).eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(served, (torch.zeros(4, 3, 8, 8, dtype=torch.uint8),),
                                  dynamic_shapes=({0: batch},))
    assert program.module()(torch.zeros(7, 3, 8, 8, dtype=torch.uint8)).shape == (7, 2)
