"""Profiling: MACs of a 3x3 conv and a depthwise-separable pair by hand, memory on meta == on CPU,
and which published figures a configuration is compared with."""

from __future__ import annotations

import torch
from torch import nn

from phiscale.models import build_model
from phiscale.models.profile import count_macs, profile_model, published_for


def test_conv_and_depthwise_separable_macs_match_the_hand_count():
    conv = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    assert count_macs(conv, 32) == 1_769_472  # 32*32 * 64 * 3*3*3
    depthwise = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
    pointwise = nn.Conv2d(3, 64, 1, bias=False)
    assert count_macs(depthwise, 32) == 27_648  # 32*32 * 3 * 3*3
    assert count_macs(pointwise, 32) == 196_608  # 32*32 * 64 * 3
    assert count_macs(nn.Sequential(depthwise, pointwise), 32) == 224_256


def test_profile_counts_flops_as_twice_macs_and_output_bytes():
    prof = profile_model(nn.Conv2d(3, 64, 3, padding=1, bias=False), 32)
    assert (prof.params, prof.macs, prof.flops) == (1728, 1_769_472, 2 * 1_769_472)
    assert prof.activation_bytes == 64 * 32 * 32 * 4  # one float32 output map


def test_meta_profile_equals_real_forward():
    torch.manual_seed(0)
    real = build_model("mobilenet_v3_small")
    with torch.device("meta"):
        meta = build_model("mobilenet_v3_small")
    assert profile_model(meta, 64) == profile_model(real, 64)
    assert real.training, "profiling must restore the training flag"


def test_published_figures_only_for_the_exact_configuration():
    b0 = published_for("efficientnet_b0", resolution=224)
    assert (b0.params, b0.macs) == (5_288_548, 390_000_000) and "arXiv:1905.11946" in b0.source
    assert published_for("efficientnet", phi=0.0) == b0, "the formula at phi=0 is B0"
    assert published_for("efficientnet", phi=1.0) is None, "no paper printed phi=1 of the formula"
    assert published_for("mobilenet_v1", width_mult=0.5).macs == 149_000_000  # Table 6
    assert published_for("mobilenet_v1", resolution=160).macs == 290_000_000  # Table 7
    assert published_for("mobilenet_v2", width_mult=0.5) is None
    assert published_for("mobilenet_v2", depth_mult=1.5) is None
    assert published_for("efficientnet_b0", num_classes=10) is None, "the figures are for 1000 classes"
