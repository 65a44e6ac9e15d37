"""Random erasing: one rectangle per erased sample, with the paper's area and aspect ranges,
filled with uniform random bytes, nothing outside it touched."""

from __future__ import annotations

import pytest
import torch

from phiscale.augment import BatchAugment
from phiscale.augment.erasing import AREA, ASPECT, erase_, sample_boxes

H, W = 40, 48


def test_boxes_follow_the_papers_ranges():
    boxes = sample_boxes(5000, H, W, 1.0, torch.Generator().manual_seed(0))
    y0, x0, h, w = boxes.unbind(1)
    erased = h > 0
    assert erased.double().mean() > 0.95  # 10 attempts nearly always find a fitting rectangle
    h, w, y0, x0 = h[erased].double(), w[erased].double(), y0[erased], x0[erased]
    assert torch.all(y0 >= 0) and torch.all(x0 >= 0)
    assert torch.all(y0 + h <= H) and torch.all(x0 + w <= W)
    # Side lengths are rounded to whole pixels: allow half a pixel on each side.
    area = h * w / (H * W)
    assert area.min() >= AREA[0] * 0.7 and area.max() <= AREA[1] * 1.1
    aspect = h / w
    assert aspect.min() >= ASPECT[0] * 0.8 and aspect.max() <= ASPECT[1] * 1.25
    assert area.min() < 0.03 and area.max() > 0.3  # the whole range is used


def test_probability_is_per_sample():
    boxes = sample_boxes(4000, H, W, 0.25, torch.Generator().manual_seed(1))
    assert (boxes[:, 2] > 0).double().mean().item() == pytest.approx(0.25 * 0.99, abs=0.03)


def test_erase_fills_the_box_with_random_bytes_and_nothing_else():
    images = torch.full((64, 3, H, W), 77, dtype=torch.uint8)
    boxes = sample_boxes(64, H, W, 1.0, torch.Generator().manual_seed(2))
    out = erase_(images.clone(), boxes, torch.Generator().manual_seed(3))
    ys, xs = torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W)
    y0, x0, h, w = (c.view(-1, 1, 1) for c in boxes.unbind(1))
    inside = ((ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w))[:, None].expand_as(out)
    assert torch.all(out[~inside] == 77)
    noise = out[inside]
    assert (noise != 77).double().mean() > 0.99
    assert noise.double().mean().item() == pytest.approx(127.5, abs=1.5)
    assert len(torch.unique(noise)) == 256


def test_batch_augment_erasing_alone():
    images = torch.full((32, 3, H, W), 90, dtype=torch.uint8)
    labels = torch.zeros(32, dtype=torch.int64)
    out, targets = BatchAugment(erasing=1.0, num_classes=2, seed=4)(images, labels)
    assert targets is labels and out.dtype == torch.uint8
    changed = (out != 90).any(dim=1)
    assert changed.flatten(1).any(dim=1).double().mean() > 0.9
    assert torch.all(images == 90)  # the input batch is not written to
    unchanged = BatchAugment(erasing=0.0, num_classes=2)(images, labels)[0]
    assert torch.equal(unchanged, images)
