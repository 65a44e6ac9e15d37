"""From a name and scaling knobs to a ModelScale (what to build) and an nn.Module (built).

`resolve_scale` holds every rule about which knobs a model accepts and what their defaults
are; `build_model` walks the architecture rows of `specs.py` once, applying the width and
depth multipliers through `scaling.round_filters` / `round_repeats`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import torch
from torch import nn

from phiscale.errors import PhiscaleError
from phiscale.models.layers import ConvBNAct, DepthwiseSeparable, InvertedResidual, make_activation
from phiscale.models.scaling import (
    ALPHA,
    BASE_RESOLUTION,
    BETA,
    GAMMA,
    check_phi,
    compound,
    make_divisible,
    round_filters,
    round_repeats,
    run_name,
    scaled_resolution,
)
from phiscale.models.specs import ARCHITECTURES, EFFICIENTNET_PRESETS, MODEL_NAMES, ArchSpec


@dataclass(frozen=True)
class ModelScale:
    """Everything that fixes a model's shape and regularisation, as logged with each run.

    phi/alpha/beta/gamma are set only for the `efficientnet` formula family (None otherwise);
    `resolution` is the model's native train/eval input side; `total_stride` the product of its
    strides (an input below it leaves the last stage less than one pixel).
    """

    name: str
    family: str
    phi: float | None
    alpha: float | None
    beta: float | None
    gamma: float | None
    width_mult: float
    depth_mult: float
    resolution: int
    resolution_mult: float
    dropout: float
    drop_path_rate: float
    bn_momentum: float  # PyTorch's convention: TF's decay 0.99 is 0.01
    total_stride: int
    zero_init_residual: bool = False  # each residual branch starts at zero (see _init_weights)
    base_mults: tuple[float, float, float] = (1.0, 1.0, 1.0)  # efficientnet: the (d, w, r) that φ scales

    @property
    def run_name(self) -> str:
        """The readable name of this scale (`phiscale.models.scaling.run_name`)."""
        return run_name(self.name, phi=self.phi, alpha=self.alpha, beta=self.beta, gamma=self.gamma,
                        width_mult=self.width_mult, resolution_mult=self.resolution_mult, base_mults=self.base_mults)


def _check_name(name: str) -> ArchSpec:
    if name not in ARCHITECTURES:
        raise PhiscaleError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return ARCHITECTURES[name]


def _positive(name: str, value: float | None, model: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise PhiscaleError(f"{model}: {name}={value!r} must be a number > 0 (e.g. {name}=1.0)")


def _probability(name: str, value: float, model: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise PhiscaleError(f"{model}: {name}={value!r} must be in [0, 1) (e.g. {name}=0.2)")
    return float(value)


def _refuse(model: str, why: str, **given: object) -> None:
    for key, value in given.items():
        if value is not None:
            raise PhiscaleError(f"{model}: {key}={value!r} is not accepted; {why}")


def resolve_scale(
    name: str,
    num_classes: int = 1000,
    *,
    phi: float | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    resolution: int | None = None,
    resolution_mult: float | None = None,
    dropout: float | None = None,
    drop_path_rate: float | None = None,
    bn_momentum: float | None = None,
    zero_init_residual: bool | None = None,
) -> ModelScale:
    """Check the knobs for `name` and fill in its defaults, without building anything.

    - `efficientnet`: d, w, r = α^φ, β^φ, γ^φ (φ defaults to 0 = B0), times the base network's
      depth_mult, width_mult, resolution_mult (default 1); resolution = round(224·r).
    - `efficientnet_b0`..`b7`: the official coefficient table; only `resolution` may be overridden.
    - MobileNets: free width_mult/depth_mult (default 1), resolution = round(224·resolution_mult).
    An explicit `resolution` always wins and sets resolution_mult = resolution / 224.
    `zero_init_residual` (default off, as the papers) starts every residual branch at zero; models
    without residual blocks (MobileNet v1) have nothing to zero.
    """
    spec = _check_name(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise PhiscaleError(f"{name}: num_classes={num_classes!r} must be an integer >= 1 (ImageNet: 1000)")
    for key, value in (("width_mult", width_mult), ("depth_mult", depth_mult), ("resolution_mult", resolution_mult)):
        _positive(key, value, name)
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral)):
        raise PhiscaleError(f"{name}: resolution={resolution!r} must be an integer number of pixels (e.g. 224)")
    if resolution is not None and resolution_mult is not None:
        raise PhiscaleError(f"{name}: give resolution={resolution} or resolution_mult={resolution_mult}, not both")

    coeffs: tuple[float | None, float | None, float | None] = (None, None, None)
    base_mults = (1.0, 1.0, 1.0)
    if name == "efficientnet":
        phi = 0.0 if phi is None else check_phi(phi)
        # width_mult, depth_mult, resolution_mult are the base network's (default B0's 1.0) that φ
        # scales: the paper's Figure 4 scales width from the baselines (d=2, r=1.3) and others.
        base_mults = tuple(float(m or 1.0) for m in (depth_mult, width_mult, resolution_mult))
        depth, width, res_mult = (base * factor for base, factor in zip(
            base_mults, compound(phi, alpha, beta, gamma), strict=True))
        coeffs = (float(alpha), float(beta), float(gamma))
        native = scaled_resolution(BASE_RESOLUTION, res_mult, spec.total_stride)
        default_dropout = spec.dropout
    else:
        _refuse(name, "phi applies only to the 'efficientnet' formula family (e.g. name='efficientnet', phi=1)",
                phi=phi)
        if (alpha, beta, gamma) != (ALPHA, BETA, GAMMA):
            raise PhiscaleError(f"{name}: alpha/beta/gamma=({alpha}, {beta}, {gamma}) apply only to "
                                "name='efficientnet'; leave them at their defaults for this model")
        if name in EFFICIENTNET_PRESETS:
            preset = EFFICIENTNET_PRESETS[name]
            _refuse(name, "the official presets are fixed; use name='efficientnet' with phi for other sizes",
                    width_mult=width_mult, depth_mult=depth_mult, resolution_mult=resolution_mult)
            width, depth, native = preset.width_mult, preset.depth_mult, preset.resolution
            res_mult = native / BASE_RESOLUTION
            default_dropout = preset.dropout
        else:
            width = 1.0 if width_mult is None else float(width_mult)
            depth = 1.0 if depth_mult is None else float(depth_mult)
            res_mult = 1.0 if resolution_mult is None else float(resolution_mult)
            native = scaled_resolution(BASE_RESOLUTION, res_mult, minimum=1)
            default_dropout = spec.dropout
    if resolution is not None:
        native, res_mult = int(resolution), int(resolution) / BASE_RESOLUTION
    if native < spec.total_stride:
        raise PhiscaleError(f"{name}: resolution {native} is smaller than the network's total stride "
                            f"{spec.total_stride}; use a resolution >= {spec.total_stride} (e.g. 224)")

    dropout = default_dropout if dropout is None else _probability("dropout", dropout, name)
    if drop_path_rate is None:
        drop_path_rate = spec.drop_path_rate
    else:
        drop_path_rate = _probability("drop_path_rate", drop_path_rate, name)
        if drop_path_rate > 0 and not any(b.kind == "ir" for b in spec.blocks):
            raise PhiscaleError(f"{name}: drop_path_rate={drop_path_rate} needs residual blocks and this model "
                                "has none; use drop_path_rate=0 (or a MobileNet v2/v3 / EfficientNet)")

    if bn_momentum is None:
        bn_momentum = spec.norm.momentum
    elif isinstance(bn_momentum, bool) or not isinstance(bn_momentum, numbers.Real) or not 0 < bn_momentum <= 1:
        raise PhiscaleError(f"bn_momentum={bn_momentum!r} must be in (0, 1] (PyTorch's convention: "
                            "TF's decay 0.99 is momentum 0.01; short runs want ~0.1)")
    if zero_init_residual is not None and not isinstance(zero_init_residual, bool):
        raise PhiscaleError(f"{name}: zero_init_residual={zero_init_residual!r} must be true or false")

    return ModelScale(
        name=name, family=spec.family, phi=phi, alpha=coeffs[0], beta=coeffs[1], gamma=coeffs[2],
        width_mult=float(width), depth_mult=float(depth), resolution=int(native), resolution_mult=float(res_mult),
        dropout=float(dropout), drop_path_rate=float(drop_path_rate), bn_momentum=float(bn_momentum),
        total_stride=spec.total_stride, zero_init_residual=bool(zero_init_residual), base_mults=base_mults,
    )


class ScaledNet(nn.Module):
    """features (stem, stages, head conv) -> global average pool -> classifier (dropout first)."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential, scale: ModelScale) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _build_features(spec: ArchSpec, scale: ModelScale) -> tuple[nn.Sequential, int]:
    width, depth = scale.width_mult, scale.depth_mult
    # Stochastic depth grows linearly with the block index over all ds/ir blocks (EfficientNet
    # reference: drop_connect_rate · idx / num_blocks).
    total_blocks = sum(round_repeats(b.repeats, depth) for b in spec.blocks if b.kind != "cn")
    stages: list[nn.Module] = []
    in_ch, index = 3, 0
    for row in spec.blocks:
        act = row.act or spec.act
        if row.out is not None:
            out_ch = round_filters(row.out, max(width, 1.0) if row.noshrink else width)
        else:  # a ratio of the incoming width (MobileNetV3's 6x head); in is already rounded
            out_ch = make_divisible(in_ch * row.expand_ratio)
        if row.kind == "cn":
            stages.append(ConvBNAct(in_ch, out_ch, row.kernel, row.stride, norm=spec.norm, act=act))
            in_ch = out_ch
            continue
        blocks: list[nn.Module] = []
        for i in range(round_repeats(row.repeats, depth)):
            stride = row.stride if i == 0 else 1
            if row.kind == "ds":
                blocks.append(DepthwiseSeparable(in_ch, out_ch, row.kernel, stride, norm=spec.norm, act=act))
            else:
                hidden = (round_filters(row.expanded, width) if row.expanded is not None
                          else make_divisible(in_ch * row.expand_ratio))
                squeeze = 0
                if row.se_ratio > 0 and spec.se is not None:
                    squeeze = spec.se.squeeze_channels(in_ch, hidden, row.se_ratio)
                blocks.append(InvertedResidual(
                    in_ch, hidden, out_ch, row.kernel, stride, norm=spec.norm, act=act, se_squeeze=squeeze,
                    se=spec.se, drop_path=scale.drop_path_rate * index / total_blocks,
                ))
            in_ch, index = out_ch, index + 1
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), in_ch


def _build_classifier(spec: ArchSpec, scale: ModelScale, in_ch: int, num_classes: int) -> nn.Sequential:
    if spec.classifier_hidden is None:
        return nn.Sequential(nn.Dropout(scale.dropout), nn.Linear(in_ch, num_classes))
    hidden = round_filters(spec.classifier_hidden, scale.width_mult)
    return nn.Sequential(
        nn.Linear(in_ch, hidden),
        make_activation(spec.classifier_act),
        nn.Dropout(scale.dropout),
        nn.Linear(hidden, num_classes),
    )


# EfficientNet's head init ±1/sqrt(classes) (TF efficientnet_model.py dense_kernel_initializer) was
# set for ImageNet's 1000 classes; with 10 classes it is 10x wider and the first logits have a std
# near 4 (loss ~5 instead of ln 10), which stalls short runs. Fewer classes keep the 1000-class scale.
REFERENCE_HEAD_CLASSES = 1000


def _init_weights(model: nn.Module, linear_init: str, zero_init_residual: bool = False) -> None:
    """The reference initialisations (torchvision / TF): He fan-out convs, unit BN, small linears;
    with `zero_init_residual`, the last BN of every residual branch starts at γ = 0, so each block
    starts as the identity (Goyal et al. 2017, arXiv 1706.02677 §5.1; He et al. 2019, arXiv
    1812.01187 §3.1): deep EfficientNets then leave the loss plateau of their first epochs at once."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if linear_init == "uniform":
                bound = 1.0 / math.sqrt(max(m.out_features, REFERENCE_HEAD_CLASSES))
                nn.init.uniform_(m.weight, -bound, bound)
            else:
                nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for block in model.modules():
            if isinstance(block, InvertedResidual) and block.use_residual:
                nn.init.zeros_(block.block[-1][1].weight)  # ConvBNAct = (conv, BN, act)


def build_model(
    name: str,
    num_classes: int = 1000,
    *,
    phi: float | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    resolution: int | None = None,
    resolution_mult: float | None = None,
    dropout: float | None = None,
    drop_path_rate: float | None = None,
    bn_momentum: float | None = None,
    zero_init_residual: bool | None = None,
) -> nn.Module:
    """Build `name` (one of MODEL_NAMES) at the given scale; the result carries `.scale` (ModelScale).

    Build under `with torch.device("meta"):` to count parameters or MACs without allocating weights.
    """
    scale = resolve_scale(
        name, num_classes, phi=phi, alpha=alpha, beta=beta, gamma=gamma, width_mult=width_mult,
        depth_mult=depth_mult, resolution=resolution, resolution_mult=resolution_mult, dropout=dropout,
        drop_path_rate=drop_path_rate, bn_momentum=bn_momentum, zero_init_residual=zero_init_residual,
    )
    spec = ARCHITECTURES[name]
    if scale.bn_momentum != spec.norm.momentum:
        spec = replace(spec, norm=replace(spec.norm, momentum=scale.bn_momentum))
    features, out_ch = _build_features(spec, scale)
    model = ScaledNet(features, _build_classifier(spec, scale, out_ch, int(num_classes)), scale)
    _init_weights(model, spec.linear_init, scale.zero_init_residual)
    return model
