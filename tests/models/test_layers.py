"""The building blocks: activations by name, squeeze sizes per family, "same" padding, the
inverted residual's shortcut, and drop path active only in training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from phiscale.errors import PhiscaleError
from phiscale.models.layers import (
    ACTIVATION_NAMES,
    ConvBNAct,
    DepthwiseSeparable,
    DropPath,
    InvertedResidual,
    NormConfig,
    SEConfig,
    SqueezeExcite,
    make_activation,
)

NORM = NormConfig()


def test_drop_path_is_active_only_in_training():
    drop = DropPath(0.5)
    x = torch.ones(256, 4)
    drop.train()
    y = drop(x)
    assert set(y.unique().tolist()) == {0.0, 2.0}, "survivors are scaled by 1/(1-p), the rest are dropped"
    drop.eval()
    assert torch.equal(drop(x), x)


def test_drop_path_probability_must_be_below_one():
    with pytest.raises(PhiscaleError, match=r"drop path probability 1.0 must be in \[0, 1\)"):
        DropPath(1.0)


def test_activations_by_name_and_none_is_linear():
    assert isinstance(make_activation(None), nn.Identity)
    assert isinstance(make_activation("hswish"), nn.Hardswish) and isinstance(make_activation("silu"), nn.SiLU)
    with pytest.raises(PhiscaleError, match="unknown activation 'gelu'; use one of " + ", ".join(ACTIVATION_NAMES)):
        make_activation("gelu")


def test_squeeze_channels_follow_the_family_rule():
    efficientnet = SEConfig(squeeze_of="input")  # max(1, int(block_in * ratio))
    assert efficientnet.squeeze_channels(16, 96, 0.25) == 4 and efficientnet.squeeze_channels(2, 12, 0.25) == 1
    mobilenet_v3 = SEConfig(squeeze_of="expanded", divisor=8)  # make_divisible(expanded * ratio, 8)
    assert mobilenet_v3.squeeze_channels(24, 72, 0.25) == 24 and mobilenet_v3.squeeze_channels(40, 120, 0.25) == 32


def test_conv_bn_act_keeps_the_size_at_stride_one_and_halves_it_at_two():
    x = torch.randn(1, 8, 17, 17)
    for kernel in (1, 3, 5):
        assert ConvBNAct(8, 4, kernel, norm=NORM, act="relu")(x).shape == (1, 4, 17, 17)
    assert ConvBNAct(8, 4, 3, 2, norm=NORM, act=None)(x).shape == (1, 4, 9, 9)
    conv, bn, act = ConvBNAct(8, 4, 3, norm=NormConfig(eps=1e-3, momentum=0.01), act=None)
    assert conv.bias is None and (bn.eps, bn.momentum) == (1e-3, 0.01) and isinstance(act, nn.Identity)


def test_depthwise_separable_is_a_depthwise_then_a_pointwise_conv():
    block = DepthwiseSeparable(8, 16, 3, 2, norm=NORM, act="relu")
    assert block[0][0].groups == 8 and block[1][0].kernel_size == (1, 1)
    assert block(torch.randn(2, 8, 16, 16)).shape == (2, 16, 8, 8)


def test_inverted_residual_shortcut_only_when_shape_is_kept():
    same = InvertedResidual(16, 96, 16, 3, 1, norm=NORM, act="relu6", drop_path=0.2)
    assert same.use_residual and isinstance(same.drop_path, DropPath)
    x = torch.randn(2, 16, 8, 8)
    same.eval()
    with torch.no_grad():
        assert torch.allclose(same(x), same.block(x) + x)
    strided = InvertedResidual(16, 96, 24, 3, 2, norm=NORM, act="relu6", drop_path=0.2)
    assert not strided.use_residual and isinstance(strided.drop_path, nn.Identity)
    assert strided(x).shape == (2, 24, 4, 4)


def test_inverted_residual_skips_the_expansion_at_ratio_one_and_adds_squeeze_excite():
    block = InvertedResidual(32, 32, 16, 3, 1, norm=NORM, act="silu", se_squeeze=8, se=SEConfig())
    kinds = [type(m) for m in block.block]
    assert kinds == [ConvBNAct, SqueezeExcite, ConvBNAct], "depthwise, SE, project: no 1x1 expansion"
    assert (block.block[1].reduce.out_channels, type(block.block[1].gate)) == (8, nn.Sigmoid)
