"""AutoAugment's ImageNet policy and RandAugment as per-sample plans: which op each sample gets in
each layer, at which magnitude; and `apply_layer`, which runs one layer over a batch, one call per
op present (geometric ops share one warp).

Magnitudes run 0..10 for every op, the scale of the AutoAugment code (`PARAMETER_MAX = 10`,
tensorflow/models research/autoaugment/augmentation_transforms.py) and of the EfficientNet TF
reference (`_MAX_LEVEL = 10`): magnitude m acts at m / 10 of the op's range below. AutoAugment's
magnitude bins 0..9 are read on that scale, as its code does. RandAugment's M uses it too, capped
at 10 (each op's full range); the RandAugment paper (arXiv 1909.13719) used M = 9 with N = 2 for
ResNet-50 on ImageNet, and quotes larger M for the large EfficientNets on an open-ended scale,
which is refused here rather than pushed past the ranges.

Plans are drawn on the CPU (the generator in BatchAugment): grouping samples by op then needs no
device synchronisation, and a plan is the same on every device for the same seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from phiscale.augment import ops

MAX_LEVEL = 10.0

# Ranges (Cubuk et al. 2018, arXiv 1805.09501, appendix table of operations): shear 0.3,
# translate 150 px of 331 (so a fraction of the image side), rotate 30 degrees, each with a random
# sign (the paper's ranges are symmetric: [-0.3, 0.3], [-150, 150], [-30, 30]); posterize 4..8 bits,
# solarize threshold 0..256, enhance factors 0.1..1.9.
SHEAR = 0.3
TRANSLATE = 150.0 / 331.0
ROTATE = 30.0
ENHANCE_MIN, ENHANCE_SPAN = 0.1, 1.8
SOLARIZE_ADD = 110.0  # EfficientNet TF reference: SolarizeAdd adds up to 110, below threshold 128


@dataclass(frozen=True)
class OpSpec:
    """How an op turns a strength s = magnitude / 10 in [0, 1] into its argument, and runs."""

    argument: Callable[[torch.Tensor], torch.Tensor] | None = None  # s [n] float64 -> argument [n]
    signed: bool = False  # the argument gets a random sign
    pixel: Callable[..., torch.Tensor] | None = None  # ops.<fn>(images) or ops.<fn>(images, argument)
    matrix: Callable[[torch.Tensor, int, int], torch.Tensor] | None = None  # geometric: (arg, H, W) -> [n,2,3]


def _enhance(s: torch.Tensor) -> torch.Tensor:
    # The AutoAugment code's `float_parameter(level, 1.8) + .1`: 0.1 (magnitude 0) .. 1.9 (magnitude 10),
    # no sign; magnitude 5 is the unchanged image.
    return ENHANCE_MIN + ENHANCE_SPAN * s


# Stronger with the magnitude for posterize and solarize, as in the AutoAugment code
# (`4 - int_parameter(level, 4)` bits, threshold `256 - int_parameter(level, 256)`), kept in the
# paper's posterize range: 8 bits (unchanged) at 0 down to 4 bits at 10.
OPS: dict[str, OpSpec] = {
    "identity": OpSpec(),
    "autocontrast": OpSpec(pixel=ops.autocontrast),
    "equalize": OpSpec(pixel=ops.equalize),
    "invert": OpSpec(pixel=ops.invert),
    "posterize": OpSpec(argument=lambda s: 8.0 - torch.floor(4.0 * s), pixel=ops.posterize),
    "solarize": OpSpec(argument=lambda s: 256.0 * (1.0 - s), pixel=ops.solarize),
    "solarize_add": OpSpec(argument=lambda s: torch.floor(SOLARIZE_ADD * s), pixel=ops.solarize_add),
    "color": OpSpec(argument=_enhance, pixel=ops.color),
    "contrast": OpSpec(argument=_enhance, pixel=ops.contrast),
    "brightness": OpSpec(argument=_enhance, pixel=ops.brightness),
    "sharpness": OpSpec(argument=_enhance, pixel=ops.sharpness),
    "rotate": OpSpec(argument=lambda s: ROTATE * s, signed=True, matrix=ops.rotate_matrix),
    "shear_x": OpSpec(argument=lambda s: SHEAR * s, signed=True, matrix=ops.shear_x_matrix),
    "shear_y": OpSpec(argument=lambda s: SHEAR * s, signed=True, matrix=ops.shear_y_matrix),
    # A fraction of the image side here; the matrix builders take pixels (see _pixels).
    "translate_x": OpSpec(argument=lambda s: TRANSLATE * s, signed=True, matrix=ops.translate_x_matrix),
    "translate_y": OpSpec(argument=lambda s: TRANSLATE * s, signed=True, matrix=ops.translate_y_matrix),
}
OP_NAMES = tuple(OPS)
_INDEX = {name: i for i, name in enumerate(OP_NAMES)}
IDENTITY = _INDEX["identity"]

# RandAugment's list (arXiv 1909.13719 §3): 14 ops, identity included. The EfficientNet TF reference
# draws from a different 16 (no identity; invert, solarize_add and cutout added).
RANDAUGMENT_OPS = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
    "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x", "translate_y",
)

# The ImageNet policy of Cubuk et al. 2018 (arXiv 1805.09501, appendix: the 25 sub-policies found
# on reduced ImageNet, repeats as printed): (op, probability, magnitude bin 0..9) twice per row.
# Ops without a magnitude carry None.
AUTOAUGMENT_IMAGENET = (
    (("posterize", 0.4, 8), ("rotate", 0.6, 9)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
    (("equalize", 0.8, None), ("equalize", 0.6, None)),
    (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
    (("equalize", 0.4, None), ("solarize", 0.2, 4)),
    (("equalize", 0.4, None), ("rotate", 0.8, 8)),
    (("solarize", 0.6, 3), ("equalize", 0.6, None)),
    (("posterize", 0.8, 5), ("equalize", 1.0, None)),
    (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
    (("equalize", 0.6, None), ("posterize", 0.4, 6)),
    (("rotate", 0.8, 8), ("color", 0.4, 0)),
    (("rotate", 0.4, 9), ("equalize", 0.6, None)),
    (("equalize", 0.0, None), ("equalize", 0.8, None)),
    (("invert", 0.6, None), ("equalize", 1.0, None)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("rotate", 0.8, 8), ("color", 1.0, 2)),
    (("color", 0.8, 8), ("solarize", 0.8, 7)),
    (("sharpness", 0.4, 7), ("invert", 0.6, None)),
    (("shear_x", 0.6, 5), ("equalize", 1.0, None)),
    (("color", 0.4, 0), ("equalize", 0.6, None)),
    (("equalize", 0.4, None), ("solarize", 0.2, 4)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, None)),
    (("invert", 0.6, None), ("equalize", 1.0, None)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("equalize", 0.8, None), ("equalize", 0.6, None)),
)


def _policy_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The policy as [25, 2] tables of op index, probability and magnitude (bins as 0..10 levels)."""
    op = torch.tensor([[_INDEX[name] for name, _, _ in row] for row in AUTOAUGMENT_IMAGENET])
    prob = torch.tensor([[p for _, p, _ in row] for row in AUTOAUGMENT_IMAGENET], dtype=torch.float64)
    level = torch.tensor([[m or 0 for _, _, m in row] for row in AUTOAUGMENT_IMAGENET], dtype=torch.float64)
    return op, prob, level


_AA_OP, _AA_PROB, _AA_LEVEL = _policy_tensors()
_RA_OP = torch.tensor([_INDEX[name] for name in RANDAUGMENT_OPS])


@dataclass(frozen=True)
class Layer:
    """One op per sample: its index in OP_NAMES (identity = skipped), magnitude 0..10, sign +-1 (CPU)."""

    op: torch.Tensor  # int64 [n]
    level: torch.Tensor  # float64 [n]
    sign: torch.Tensor  # float64 [n]


def _signs(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=generator).to(torch.float64).mul_(2).sub_(1)


def autoaugment_plan(n: int, generator: torch.Generator) -> list[Layer]:
    """Per sample one of the 25 sub-policies, uniformly; each of its two ops runs with its probability."""
    choice = torch.randint(0, len(AUTOAUGMENT_IMAGENET), (n,), generator=generator)
    layers = []
    for j in range(2):
        runs = torch.rand(n, generator=generator, dtype=torch.float64) < _AA_PROB[choice, j]
        op = torch.where(runs, _AA_OP[choice, j], IDENTITY)
        layers.append(Layer(op, _AA_LEVEL[choice, j], _signs(n, generator)))
    return layers


def randaugment_plan(n: int, generator: torch.Generator, *, num_ops: int, magnitude: float,
                     magnitude_std: float = 0.0) -> list[Layer]:
    """Per sample and layer an op drawn uniformly (with replacement) from RANDAUGMENT_OPS at
    magnitude M, plus N(0, magnitude_std) noise per sample and layer, clipped to 0..10."""
    layers = []
    for _ in range(num_ops):
        op = _RA_OP[torch.randint(0, len(_RA_OP), (n,), generator=generator)]
        level = torch.full((n,), float(magnitude), dtype=torch.float64)
        if magnitude_std > 0:
            noise = torch.randn(n, generator=generator, dtype=torch.float64)
            level = level.add_(noise, alpha=magnitude_std).clamp_(0.0, MAX_LEVEL)
        layers.append(Layer(op, level, _signs(n, generator)))
    return layers


def op_arguments(name: str, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor | None:
    """The argument of op `name` at these magnitudes (CPU float64), sign applied where the op takes one."""
    spec = OPS[name]
    if spec.argument is None:
        return None
    arg = spec.argument(level / MAX_LEVEL)
    return arg * sign if spec.signed else arg


def _pixels(name: str, arg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Translations are drawn as a fraction of the side; their matrices take pixels."""
    return arg * {"translate_x": width, "translate_y": height}.get(name, 1)


def apply_layer(images: torch.Tensor, layer: Layer, *, interpolation: str = "nearest",
                fill: float = 128.0) -> torch.Tensor:
    """Run one layer in place on `images` (uint8 [N,3,H,W]): each point/colour op once on the samples
    that drew it, all geometric ops together in one warp. Returns `images`."""
    _, _, height, width = images.shape
    device = images.device
    warp_rows, warp_matrices = [], []
    for k in torch.unique(layer.op).tolist():
        name = OP_NAMES[k]
        spec = OPS[name]
        if spec.pixel is None and spec.matrix is None:
            continue
        rows = (layer.op == k).nonzero().squeeze(1)
        arg = op_arguments(name, layer.level[rows], layer.sign[rows])
        if spec.matrix is not None:
            warp_rows.append(rows)
            warp_matrices.append(spec.matrix(_pixels(name, arg, height, width), height, width))
            continue
        # Pageable CPU -> device copies with non_blocking=True are staged at once and do not wait
        # for the device: no synchronisation here.
        rows_on_device = rows.to(device, non_blocking=True)
        args = () if arg is None else (arg.to(device, torch.float32, non_blocking=True),)
        images.index_copy_(0, rows_on_device, spec.pixel(images.index_select(0, rows_on_device), *args))
    if warp_rows:
        rows_on_device = torch.cat(warp_rows).to(device, non_blocking=True)
        warped = ops.warp_affine(images.index_select(0, rows_on_device), torch.cat(warp_matrices),
                                 interpolation=interpolation, fill=fill)
        images.index_copy_(0, rows_on_device, warped)
    return images
