"""Architectures as data: one row language, decoded once at import.

A row is `kind_token_token…`, one stage of identical blocks (the first one carries the stride):

    kind   cn   conv-BN-act (stem, head)
           ds   depthwise-separable (MobileNet v1)
           ir   inverted residual / MBConv (MobileNet v2/v3, EfficientNet)
    rN     repeats (default 1; scaled by the depth multiplier, ds/ir rows only)
    kN     kernel size (default 3)           sN   stride of the first block (default 1)
    cN     output channels at width 1.0      eR   expansion ratio: hidden = make_divisible(in · R)
    xN     hidden channels at width 1.0 (MobileNetV3 lists them explicitly)
    seR    squeeze-and-excitation ratio (sized by the family's SEConfig)
    relu | relu6 | hswish | silu             activation of this row (default: the family's)
    noshrink   width multipliers below 1 do not shrink this row (MobileNetV2's 1280 head)

e.g. `ir_r2_k5_s2_e6_c40_se0.25` is two MBConv6 5x5 blocks to 40 channels with SE 0.25, the
first with stride 2. The idea follows timm's `_efficientnet_builder.py`; the rows below are
transcribed from the papers' tables (cited per family).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from phiscale.errors import PhiscaleError
from phiscale.models.scaling import make_divisible

# The activations a row may name (phiscale.models.layers builds them).
ACTIVATION_NAMES = ("relu", "relu6", "hswish", "silu", "sigmoid", "hsigmoid")


@dataclass(frozen=True)
class NormConfig:
    """BatchNorm settings of one family, in PyTorch's convention (momentum = 1 - TF's decay)."""

    eps: float = 1e-5
    momentum: float = 0.1


@dataclass(frozen=True)
class SEConfig:
    """How a family sizes and gates its squeeze-and-excitation.

    squeeze_of: "input" -> max(1, int(block_in · ratio)) (EfficientNet, MBConv reference);
                "expanded" -> make_divisible(expanded · ratio, divisor) (MobileNetV3).
    """

    squeeze_of: str = "input"
    divisor: int | None = None
    act: str = "silu"
    gate: str = "sigmoid"

    def squeeze_channels(self, block_in: int, expanded: int, ratio: float) -> int:
        base = block_in if self.squeeze_of == "input" else expanded
        if self.divisor is None:
            return max(1, int(base * ratio))
        return make_divisible(base * ratio, self.divisor)



_TOKEN = re.compile(r"^(r|k|s|c|e|x|se)(\d+(?:\.\d+)?)$")
_KINDS = ("cn", "ds", "ir")


@dataclass(frozen=True)
class BlockSpec:
    """One decoded row: a stage of `repeats` identical blocks, the first with `stride`."""

    kind: str
    repeats: int = 1
    kernel: int = 3
    stride: int = 1
    out: int | None = None
    expand_ratio: float | None = None
    expanded: int | None = None
    se_ratio: float = 0.0
    act: str | None = None
    noshrink: bool = False


def decode_block(text: str) -> BlockSpec:
    """Parse one row such as `ir_r2_k3_s2_e6_c24_se0.25` into a BlockSpec."""
    kind, *tokens = text.split("_")
    if kind not in _KINDS:
        raise PhiscaleError(f"block row {text!r}: kind {kind!r} is not one of {', '.join(_KINDS)}")
    fields: dict[str, object] = {"kind": kind}
    for token in tokens:
        if token in ACTIVATION_NAMES:
            fields["act"] = token
            continue
        if token == "noshrink":
            fields["noshrink"] = True
            continue
        match = _TOKEN.match(token)
        if not match:
            raise PhiscaleError(f"block row {text!r}: cannot read token {token!r} (see phiscale.models.specs)")
        key, value = match.groups()
        if key in ("e", "se"):
            fields["expand_ratio" if key == "e" else "se_ratio"] = float(value)
        else:
            name = {"r": "repeats", "k": "kernel", "s": "stride", "c": "out", "x": "expanded"}[key]
            fields[name] = int(float(value))
    spec = BlockSpec(**fields)  # type: ignore[arg-type]
    if spec.out is None and spec.expand_ratio is None:
        raise PhiscaleError(f"block row {text!r} needs output channels (cN) or, for cn, a ratio (eR)")
    if spec.kind == "ir" and (spec.expand_ratio is None) == (spec.expanded is None):
        raise PhiscaleError(f"block row {text!r}: an ir row needs exactly one of eR (ratio) or xN (hidden)")
    return spec


def decode_rows(rows: str) -> tuple[BlockSpec, ...]:
    """Decode a whitespace-separated list of rows."""
    return tuple(decode_block(row) for row in rows.split())


@dataclass(frozen=True)
class ArchSpec:
    """A whole network as data; `phiscale.models.build` only walks it."""

    family: str
    blocks: tuple[BlockSpec, ...]
    act: str
    norm: NormConfig
    se: SEConfig | None = None
    classifier_hidden: int | None = None  # MobileNetV3: Linear -> hswish -> dropout -> Linear
    classifier_act: str | None = None
    linear_init: str = "normal"  # "normal": N(0, 0.01) (MobileNets); "uniform": ±1/sqrt(max(out, 1000)) (EfficientNet)
    dropout: float = 0.2
    drop_path_rate: float = 0.0

    @property
    def total_stride(self) -> int:
        stride = 1
        for block in self.blocks:
            stride *= block.stride
        return stride


# MobileNet v1, arXiv:1704.04861 Table 1 (the last depthwise layer has stride 1 in every reference
# implementation; Table 1's "s2" there would leave a 4x4 map where the table says 7x7).
# Dropout 1e-3: TF-slim mobilenet_v1.py (dropout_keep_prob=0.999); BN: PyTorch defaults.
MOBILENET_V1 = ArchSpec(
    family="mobilenet_v1",
    blocks=decode_rows("""
        cn_k3_s2_c32
        ds_k3_s1_c64
        ds_k3_s2_c128  ds_k3_s1_c128
        ds_k3_s2_c256  ds_k3_s1_c256
        ds_k3_s2_c512  ds_r5_k3_s1_c512
        ds_k3_s2_c1024 ds_k3_s1_c1024
    """),
    act="relu",
    norm=NormConfig(),
    dropout=1e-3,
)

# MobileNetV2, arXiv:1801.04381 Table 2 (t, c, n, s); ReLU6; the 1280 head only grows (width > 1).
MOBILENET_V2 = ArchSpec(
    family="mobilenet_v2",
    blocks=decode_rows("""
        cn_k3_s2_c32
        ir_r1_k3_s1_e1_c16
        ir_r2_k3_s2_e6_c24
        ir_r3_k3_s2_e6_c32
        ir_r4_k3_s2_e6_c64
        ir_r3_k3_s1_e6_c96
        ir_r3_k3_s2_e6_c160
        ir_r1_k3_s1_e6_c320
        cn_k1_c1280_noshrink
    """),
    act="relu6",
    norm=NormConfig(),
    dropout=0.2,
)

# MobileNetV3, arXiv:1905.02244 Tables 1 (Large) and 2 (Small): "exp size" is the x column;
# SE squeeze = make_divisible(exp/4, 8) with ReLU inside and a hard-sigmoid gate (Sec. 5.3);
# head 1x1 conv to 6x the last width, then Linear to 1280 (Large) / 1024 (Small) (Sec. 5.2.1).
# BN eps 1e-3, momentum 0.01 as in the TF reference and torchvision.
_V3_NORM = NormConfig(eps=1e-3, momentum=0.01)
_V3_SE = SEConfig(squeeze_of="expanded", divisor=8, act="relu", gate="hsigmoid")

MOBILENET_V3_LARGE = ArchSpec(
    family="mobilenet_v3",
    blocks=decode_rows("""
        cn_k3_s2_c16_hswish
        ir_k3_s1_x16_c16_relu
        ir_k3_s2_x64_c24_relu
        ir_k3_s1_x72_c24_relu
        ir_k5_s2_x72_c40_se0.25_relu
        ir_r2_k5_s1_x120_c40_se0.25_relu
        ir_k3_s2_x240_c80
        ir_k3_s1_x200_c80
        ir_r2_k3_s1_x184_c80
        ir_k3_s1_x480_c112_se0.25
        ir_k3_s1_x672_c112_se0.25
        ir_k5_s2_x672_c160_se0.25
        ir_r2_k5_s1_x960_c160_se0.25
        cn_k1_e6
    """),
    act="hswish",
    norm=_V3_NORM,
    se=_V3_SE,
    classifier_hidden=1280,
    classifier_act="hswish",
    dropout=0.2,
)

MOBILENET_V3_SMALL = ArchSpec(
    family="mobilenet_v3",
    blocks=decode_rows("""
        cn_k3_s2_c16_hswish
        ir_k3_s2_x16_c16_se0.25_relu
        ir_k3_s2_x72_c24_relu
        ir_k3_s1_x88_c24_relu
        ir_k5_s2_x96_c40_se0.25
        ir_r2_k5_s1_x240_c40_se0.25
        ir_k5_s1_x120_c48_se0.25
        ir_k5_s1_x144_c48_se0.25
        ir_k5_s2_x288_c96_se0.25
        ir_r2_k5_s1_x576_c96_se0.25
        cn_k1_e6
    """),
    act="hswish",
    norm=_V3_NORM,
    se=_V3_SE,
    classifier_hidden=1024,
    classifier_act="hswish",
    dropout=0.2,
)

# EfficientNet-B0, arXiv:1905.11946 Table 1 (MBConv{e} k x k, channels, layers, stride), swish
# (SiLU), SE 0.25 of the block input; head round_filters(1280 · w). BN eps 1e-3, momentum 0.01
# (TF's decay 0.99) as in the official TF code; stochastic depth 0.2 (the reference
# drop_connect_rate), linear in block index.
EFFICIENTNET = ArchSpec(
    family="efficientnet",
    blocks=decode_rows("""
        cn_k3_s2_c32
        ir_r1_k3_s1_e1_c16_se0.25
        ir_r2_k3_s2_e6_c24_se0.25
        ir_r2_k5_s2_e6_c40_se0.25
        ir_r3_k3_s2_e6_c80_se0.25
        ir_r3_k5_s1_e6_c112_se0.25
        ir_r4_k5_s2_e6_c192_se0.25
        ir_r1_k3_s1_e6_c320_se0.25
        cn_k1_c1280
    """),
    act="silu",
    norm=NormConfig(eps=1e-3, momentum=0.01),
    se=SEConfig(squeeze_of="input", divisor=None, act="silu", gate="sigmoid"),
    linear_init="uniform",
    dropout=0.2,
    drop_path_rate=0.2,
)


@dataclass(frozen=True)
class EfficientNetPreset:
    """One row of the official coefficient table: these are NOT α^φ, β^φ, γ^φ for integer φ."""

    width_mult: float
    depth_mult: float
    resolution: int
    dropout: float


# The official table: efficientnet_builder.py `efficientnet_params` in the TF reference
# (github.com/tensorflow/tpu, models/official/efficientnet), also used by torchvision and timm.
EFFICIENTNET_PRESETS: dict[str, EfficientNetPreset] = {
    "efficientnet_b0": EfficientNetPreset(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": EfficientNetPreset(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": EfficientNetPreset(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": EfficientNetPreset(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": EfficientNetPreset(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": EfficientNetPreset(1.6, 2.2, 456, 0.4),
    "efficientnet_b6": EfficientNetPreset(1.8, 2.6, 528, 0.5),
    "efficientnet_b7": EfficientNetPreset(2.0, 3.1, 600, 0.5),
}

ARCHITECTURES: dict[str, ArchSpec] = {
    "mobilenet_v1": MOBILENET_V1,
    "mobilenet_v2": MOBILENET_V2,
    "mobilenet_v3_large": MOBILENET_V3_LARGE,
    "mobilenet_v3_small": MOBILENET_V3_SMALL,
    **dict.fromkeys(EFFICIENTNET_PRESETS, EFFICIENTNET),
    "efficientnet": EFFICIENTNET,
}

MODEL_NAMES: tuple[str, ...] = (
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    *EFFICIENTNET_PRESETS,
    "efficientnet",
)
PRESET_NAMES: tuple[str, ...] = MODEL_NAMES[:-1]  # every name with a fixed published shape
