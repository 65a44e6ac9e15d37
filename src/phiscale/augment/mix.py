"""Mixup (Zhang et al. 2017, arXiv 1710.09412) and CutMix (Yun et al. 2019, arXiv 1905.04899) on a
uint8 batch, with label-smoothed soft targets, and the loss that reads them.

One mixing weight per batch, and each sample is mixed with the sample at the mirrored position of
the batch (i with N-1-i: `flip(0)`), so no permutation has to be drawn or sent to the device; the
loader shuffles, so the pairs are random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIX_KINDS = ("none", "mixup", "cutmix")


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Targets (1 - eps) * onehot + eps / C as float32 [N, C]: the target nn.CrossEntropyLoss(
    label_smoothing=eps) uses (Szegedy et al. 2016, arXiv 1512.00567 §7)."""
    targets = torch.full((labels.shape[0], num_classes), smoothing / num_classes, dtype=torch.float32,
                         device=labels.device)
    return targets.scatter_add_(1, labels.view(-1, 1), torch.full_like(targets[:, :1], 1.0 - smoothing))


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c targets_c * log softmax(logits)_c (targets [N, C], rows sum to 1)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1).mean()


def _standard_gamma_log(shape: float, generator: torch.Generator) -> float:
    """log of one Gamma(shape, 1) draw, Marsaglia & Tsang (2000, ACM TOMS 26(3)) with the
    U^(1/shape) boost for shape < 1, in logs so that tiny shapes do not underflow."""
    boost = 0.0
    if shape < 1.0:
        u = torch.rand((), generator=generator, dtype=torch.float64).item()
        boost = math.log(max(u, 1e-300)) / shape
        shape += 1.0
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = torch.randn((), generator=generator, dtype=torch.float64).item()
        v = (1.0 + c * x) ** 3
        if v <= 0.0:
            continue
        u = torch.rand((), generator=generator, dtype=torch.float64).item()
        if math.log(max(u, 1e-300)) < 0.5 * x * x + d - d * v + d * math.log(v):
            return math.log(d * v) + boost


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(alpha, alpha) draw from `generator` (torch.distributions takes no generator):
    X / (X + Y) with X, Y ~ Gamma(alpha), as sigmoid(log X - log Y)."""
    diff = _standard_gamma_log(alpha, generator) - _standard_gamma_log(alpha, generator)
    return 1.0 / (1.0 + math.exp(-diff)) if diff > -700 else 0.0


@dataclass(frozen=True)
class MixChoice:
    """What one batch gets: kind, the weight of each sample's own image/label, and CutMix's box."""

    kind: str = "none"
    lam: float = 1.0
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # y0, y1, x0, x1 (pasted from the partner)


def cutmix_box(lam: float, height: int, width: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """CutMix's box (arXiv 1905.04899 §3.1): sides W sqrt(1 - lam), H sqrt(1 - lam), centre uniform
    over the image, clipped to it (so its area may be smaller than (1 - lam) H W)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (), generator=generator))
    cx = int(torch.randint(0, width, (), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return y0, y1, x0, x1


def sample_mix(generator: torch.Generator, *, height: int, width: int, mixup: float, cutmix: float,
               mix_prob: float, switch_prob: float) -> MixChoice:
    """Whether this batch is mixed (mix_prob), how (CutMix with switch_prob when both are on), and
    the weight lam ~ Beta(alpha, alpha); for CutMix lam is then the share of the image left
    unpasted, 1 - box area / (H W)."""
    if mixup <= 0 and cutmix <= 0:
        return MixChoice()
    u_mix, u_switch = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    if u_mix >= mix_prob:
        return MixChoice()
    use_cutmix = cutmix > 0 and (mixup <= 0 or u_switch < switch_prob)
    if not use_cutmix:
        return MixChoice("mixup", sample_beta(mixup, generator))
    box = cutmix_box(sample_beta(cutmix, generator), height, width, generator)
    y0, y1, x0, x1 = box
    return MixChoice("cutmix", 1.0 - (y1 - y0) * (x1 - x0) / (height * width), box)


def apply_mix(images: torch.Tensor, targets: torch.Tensor, choice: MixChoice) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix `images` (uint8, in place for CutMix) and soft `targets` [N, C] with the flipped batch."""
    if choice.kind == "none":
        return images, targets
    lam = choice.lam
    if choice.kind == "mixup":
        mixed = images.to(torch.float32).mul_(lam).add_(images.flip(0).to(torch.float32), alpha=1.0 - lam)
        images = mixed.round_().clamp_(0, 255).to(torch.uint8)
    else:
        y0, y1, x0, x1 = choice.box
        images[:, :, y0:y1, x0:x1] = images[:, :, y0:y1, x0:x1].flip(0)
    return images, targets.mul(lam).add_(targets.flip(0), alpha=1.0 - lam)
