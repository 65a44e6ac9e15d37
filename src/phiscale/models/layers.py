"""The few building blocks every architecture here is made of.

conv-BN-act, depthwise-separable (MobileNet v1), inverted residual / MBConv (MobileNet v2/v3,
EfficientNet), squeeze-and-excitation with a configurable squeeze rule, inner activation and
gate, and drop path (stochastic depth). Convolutions carry no bias: a BatchNorm follows each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from phiscale.errors import PhiscaleError
from phiscale.models.specs import ACTIVATION_NAMES, NormConfig, SEConfig

# In-place where the op allows it (as torchvision does): the activation overwrites the BN output,
# which autograd does not need, so training keeps one tensor fewer per layer. The names are the
# spec language's (specs.ACTIVATION_NAMES).
_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),  # MobileNetV3, arXiv:1905.02244 Sec. 5.2
    "silu": lambda: nn.SiLU(inplace=True),  # "swish" in EfficientNet
    "sigmoid": nn.Sigmoid,
    "hsigmoid": nn.Hardsigmoid,  # relu6(x + 3) / 6, MobileNetV3's SE gate
}
assert set(_ACTIVATIONS) == set(ACTIVATION_NAMES), "every activation of the spec language has a module"


def make_activation(name: str | None) -> nn.Module:
    """An activation module by its short name; None is the identity (a linear bottleneck)."""
    if name is None:
        return nn.Identity()
    if name not in _ACTIVATIONS:
        raise PhiscaleError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATION_NAMES)}")
    return _ACTIVATIONS[name]()


def batch_norm(norm: NormConfig, channels: int) -> nn.BatchNorm2d:
    """A family's BatchNorm (its eps and momentum, PyTorch's convention) over `channels`."""
    return nn.BatchNorm2d(channels, eps=norm.eps, momentum=norm.momentum)


class ConvBNAct(nn.Sequential):
    """Conv (no bias, "same" padding for odd kernels) -> BatchNorm -> activation (or none)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        *,
        norm: NormConfig,
        act: str | None,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                      bias=False),
            batch_norm(norm, out_channels),
            make_activation(act),
        )
        self.out_channels = out_channels


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch of a sample with prob. p.

    Survivors are scaled by 1/(1-p) so the expected output is unchanged; in eval mode (or p=0)
    it is the identity.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise PhiscaleError(f"drop path probability {p!r} must be in [0, 1) (EfficientNet uses up to 0.2)")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:.4g}"


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): global pool -> 1x1 conv -> act -> 1x1 conv -> gate -> scale."""

    def __init__(self, channels: int, squeeze: int, *, act: str, gate: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = make_activation(act)
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = make_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.gate(self.expand(self.act(self.reduce(scale))))
        return x * scale


class DepthwiseSeparable(nn.Sequential):
    """MobileNet v1 block (arXiv:1704.04861 Fig. 3): 3x3 depthwise conv-BN-act, 1x1 pointwise conv-BN-act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, *,
                 norm: NormConfig, act: str) -> None:
        super().__init__(
            ConvBNAct(in_channels, in_channels, kernel_size, stride, groups=in_channels, norm=norm, act=act),
            ConvBNAct(in_channels, out_channels, 1, norm=norm, act=act),
        )
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """Inverted residual with linear bottleneck (MobileNetV2) = MBConv (MobileNetV3, EfficientNet).

    1x1 expand (skipped when expanded == in) -> kxk depthwise -> optional SE -> 1x1 linear project;
    the identity shortcut (with drop path) is used when stride is 1 and channels are unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        expanded: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        *,
        norm: NormConfig,
        act: str,
        se_squeeze: int = 0,
        se: SEConfig | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvBNAct(in_channels, expanded, 1, norm=norm, act=act))
        layers.append(ConvBNAct(expanded, expanded, kernel_size, stride, groups=expanded, norm=norm, act=act))
        if se_squeeze > 0:
            se = se or SEConfig()
            layers.append(SqueezeExcite(expanded, se_squeeze, act=se.act, gate=se.gate))
        layers.append(ConvBNAct(expanded, out_channels, 1, norm=norm, act=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path) if self.use_residual else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.drop_path(out) + x
        return out
