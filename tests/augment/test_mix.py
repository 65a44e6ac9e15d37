"""Mixup and CutMix through BatchAugment: soft targets that sum to 1, CutMix's weight equal to the
pasted area, the mixing probabilities, the Beta sampler, and the soft-target loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from phiscale.augment import BatchAugment, smooth_one_hot, soft_target_cross_entropy
from phiscale.augment.mix import sample_beta

N, C, H, W = 8, 10, 24, 32


def constant_batch():
    """Sample i is flat grey 20 + 25 i, label i: what was pasted or blended from whom is readable."""
    values = torch.tensor([20 + 25 * i for i in range(N)], dtype=torch.uint8)
    images = values.view(N, 1, 1, 1).expand(N, 3, H, W).contiguous()
    return images, torch.arange(N), values


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_soft_targets_without_mixing_give_torchs_label_smoothed_loss(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=g) * 3
    labels = torch.randint(0, C, (16,), generator=g)
    targets = smooth_one_hot(labels, C, eps)
    assert torch.allclose(targets.sum(1), torch.ones(16))
    expected = nn.CrossEntropyLoss(label_smoothing=eps)(logits, labels)
    assert soft_target_cross_entropy(logits, targets).item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-6)


def test_mixup_blends_images_and_targets_with_the_flipped_batch():
    images, labels, values = constant_batch()
    augment = BatchAugment(mixup=0.4, num_classes=C, seed=3)
    for _ in range(5):
        out, targets = augment(images, labels)
        assert targets.dtype == torch.float32 and targets.shape == (N, C)
        assert torch.allclose(targets.sum(1), torch.ones(N))
        lam = targets[0, 0].item()  # sample 0 keeps lam of its own label (no smoothing here)
        assert targets[0, N - 1].item() == pytest.approx(1 - lam, abs=1e-6)
        expected = (lam * values.double() + (1 - lam) * values.flip(0).double()).round().to(torch.uint8)
        assert torch.equal(out[:, :, 0, 0], expected.view(N, 1).expand(N, 3))
        assert torch.equal(out.amin(dim=(1, 2, 3)), out.amax(dim=(1, 2, 3)))  # a blend, no box


def test_cutmix_weight_is_the_unpasted_area():
    """The partner's pixels fill one rectangle; lam (the weight of the own label) = 1 - its area / HW."""
    images, labels, values = constant_batch()
    augment = BatchAugment(cutmix=1.0, num_classes=C, label_smoothing=0.1, seed=5)
    seen_boxes = set()
    for _ in range(20):
        out, targets = augment(images, labels)
        assert torch.allclose(targets.sum(1), torch.ones(N))
        pasted = out[:, 0] == values.flip(0).view(N, 1, 1)
        assert torch.all((out[:, 0] == values.view(N, 1, 1)) | pasted)
        area = pasted[0].double().mean().item()
        rows, cols = pasted[0].nonzero().unbind(1) if area else (torch.zeros(0), torch.zeros(0))
        if area:  # a rectangle, the same for every sample
            assert pasted[0].sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            seen_boxes.add((int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())))
        assert torch.equal(pasted, pasted[:1].expand_as(pasted))
        smoothed = smooth_one_hot(labels, C, 0.1)
        expected = (1 - area) * smoothed + area * smoothed.flip(0)
        assert torch.allclose(targets, expected, atol=1e-6)
    assert len(seen_boxes) > 10


def test_mix_prob_and_switch_prob_pick_how_often_and_which():
    images, labels, values = constant_batch()

    def kinds(**kwargs):
        augment = BatchAugment(num_classes=C, seed=11, **kwargs)
        found = []
        for _ in range(300):
            out, targets = augment(images, labels)
            if torch.equal(targets, smooth_one_hot(labels, C)):
                found.append("none")
            elif torch.equal(out.amin(dim=(1, 2, 3)), out.amax(dim=(1, 2, 3))):
                found.append("mixup")
            else:
                found.append("cutmix")
        return found

    half = kinds(mixup=1.0, cutmix=1.0, mix_prob=0.5, switch_prob=0.5)
    assert half.count("none") / 300 == pytest.approx(0.5, abs=0.1)
    assert half.count("cutmix") / 300 == pytest.approx(0.25, abs=0.08)
    assert set(kinds(mixup=1.0, cutmix=1.0, switch_prob=0.0)) == {"mixup"}
    # A CutMix draw with lam within ~1/(H W) of 1 pastes an empty box, indistinguishable from "none".
    for found in (kinds(mixup=1.0, cutmix=1.0, switch_prob=1.0), kinds(cutmix=1.0, switch_prob=0.0)):
        assert found.count("mixup") == 0 and found.count("none") <= 3


def test_unmixed_batches_still_get_soft_smoothed_targets():
    images, labels, _ = constant_batch()
    out, targets = BatchAugment(mixup=0.2, mix_prob=0.0, num_classes=C, label_smoothing=0.1)(images, labels)
    assert torch.equal(out, images)
    assert torch.allclose(targets, smooth_one_hot(labels, C, 0.1))


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_sampler_has_the_beta_moments(alpha):
    g = torch.Generator().manual_seed(7)
    draws = torch.tensor([sample_beta(alpha, g) for _ in range(4000)], dtype=torch.float64)
    assert draws.min() >= 0 and draws.max() <= 1
    assert draws.mean().item() == pytest.approx(0.5, abs=0.02)
    assert draws.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)


def test_beta_sampler_survives_tiny_alpha():
    g = torch.Generator().manual_seed(8)
    draws = [sample_beta(0.01, g) for _ in range(200)]
    assert all(0.0 <= d <= 1.0 for d in draws)
    assert sum(d < 0.01 or d > 0.99 for d in draws) > 150  # Beta(0.01, 0.01) sits at the ends
