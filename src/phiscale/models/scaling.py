"""The scaling facts, in one torch-free module: compound scaling (EfficientNet, Tan & Le 2019,
arXiv:1905.11946, Sec. 3.3), the base resolution, the rounding rules and run names.

Every channel count and repeat count in `phiscale.models` goes through `round_filters` and
`round_repeats` here, so a width or depth multiplier is applied in exactly one way. The sweep
table, the configs (`phiscale.config` registers them), the report and the trainer read α, β, γ
and the base resolution from here.
"""

from __future__ import annotations

import math
import numbers
import warnings

from phiscale.errors import PhiscaleError

# EfficientNet paper, Sec. 3.3: a grid search at φ=1 found α=1.2, β=1.1, γ=1.15 under
# α·β²·γ² ≈ 2, so that FLOPs grow by about 2^φ.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
FLOPS_GROWTH_TARGET = 2.0
# Every paper here (MobileNet v1/v2/v3, EfficientNet) reports its base model at 224x224; a
# resolution multiplier r means an input side of round(224·r).
BASE_RESOLUTION = 224


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to the nearest multiple of `divisor`, never below `min_value` (default: divisor).

    If rounding down loses more than 10 % of `value`, go one step up: the rule of the
    TF reference (`round_filters` in efficientnet_model.py, `_make_divisible` in the
    MobileNet v2/v3 code), which keeps channel counts friendly to hardware vector widths.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def round_filters(filters: float, width_mult: float = 1.0, divisor: int = 8) -> int:
    """Channels of a layer after the width multiplier: `make_divisible(filters · width_mult, 8)`."""
    return make_divisible(filters * width_mult, divisor)


def round_repeats(repeats: int, depth_mult: float = 1.0) -> int:
    """Blocks in a stage after the depth multiplier: ceil(d · n), as in the EfficientNet reference.

    The product is rounded to 9 decimals first so that float noise (1.1 · 10 = 11.000000000000002)
    does not add a block.
    """
    return int(math.ceil(round(depth_mult * repeats, 9)))


def flops_growth(alpha: float, beta: float, gamma: float) -> float:
    """FLOPs factor per unit of φ: α·β²·γ² (FLOPs scale with d, w², r²; paper Eq. 3)."""
    return alpha * beta**2 * gamma**2


def check_flops_growth(alpha: float, beta: float, gamma: float, tolerance: float = 0.1) -> float:
    """Warn when α·β²·γ² is more than `tolerance` (relative) away from 2; return the product.

    The paper constrains α·β²·γ² ≈ 2 so that φ reads as log2 of the compute budget; other
    coefficients are allowed (an α·β·γ sweep needs them) but φ then means something else.
    """
    growth = flops_growth(alpha, beta, gamma)
    if abs(growth / FLOPS_GROWTH_TARGET - 1.0) > tolerance:
        warnings.warn(
            f"alpha*beta^2*gamma^2 = {growth:.3f} (alpha={alpha}, beta={beta}, gamma={gamma}) is far from 2: "
            "FLOPs will grow by about that factor per unit of phi, not 2x; "
            "choose coefficients with alpha*beta^2*gamma^2 close to 2 to keep phi = log2(compute)",
            UserWarning,
            stacklevel=3,
        )
    return growth


def check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise PhiscaleError(f"{name}={value!r} must be a finite number > 0 (e.g. {_EXAMPLES.get(name, '1.0')})")


_EXAMPLES = {"alpha": "1.2", "beta": "1.1", "gamma": "1.15", "max_macs": "4e8", "max_params": "5e6",
             "max_memory": "5e7"}


# The largest φ taken: FLOPs grow about 2^φ, so φ=20 is a million times B0's (about 4e14 MACs per
# image); far beyond it α^φ overflows a float (phi=1e9 ended in an OverflowError in `compound`).
MAX_PHI = 20.0


def check_phi(phi: float) -> float:
    """Validate φ: a real number in [0, MAX_PHI] (φ=0 is EfficientNet-B0)."""
    if isinstance(phi, bool) or not isinstance(phi, numbers.Real) or not math.isfinite(phi) or phi < 0:
        raise PhiscaleError(f"phi={phi!r} must be a finite number >= 0 (phi=0 is EfficientNet-B0; try phi=1)")
    if phi > MAX_PHI:
        raise PhiscaleError(f"phi={phi:g} is out of range: phi must be in [0, {MAX_PHI:g}] (FLOPs grow about 2^phi; "
                            f"phi={MAX_PHI:g} is a million times EfficientNet-B0's); try phi=1")
    return float(phi)


def compound(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> tuple[float, float, float]:
    """Depth, width and resolution multipliers for compound coefficient φ: (α^φ, β^φ, γ^φ).

    Paper Eq. 3. Warns (once per call site) when α·β²·γ² is far from 2.
    """
    phi = check_phi(phi)
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        check_positive(name, value)
    check_flops_growth(alpha, beta, gamma)
    return alpha**phi, beta**phi, gamma**phi


def scaled_resolution(base: int, resolution_mult: float, minimum: int = 32) -> int:
    """Input side after the resolution multiplier: nearest integer to base·r (halves round up), >= `minimum`.

    The official B1–B7 resolutions are not multiples of 8 or 32 either (240, 260, 380, …), so no
    further rounding is applied; `minimum` is the network's total stride, below which the last
    stage would see less than one pixel.
    """
    return max(minimum, int(math.floor(base * resolution_mult + 0.5)))


def macs_ratio(depth_mult: float = 1.0, width_mult: float = 1.0, resolution_mult: float = 1.0) -> float:
    """MACs relative to the base model: d·w²·r² (paper Eq. 3; (α·β²·γ²)^φ for the φ family)."""
    return depth_mult * width_mult**2 * resolution_mult**2


def run_name(
    name: str,
    *,
    phi: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    gamma: float | None = None,
    width_mult: float | None = None,
    resolution_mult: float | None = None,
    base_mults: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> str:
    """A model's readable name at its scale, used for MLflow runs and output dirs:
    `efficientnet-phi1.5`, `efficientnet-phi1-a1.3-b1.1-g1.1`, `efficientnet_b3`, `mobilenet_v2-w0.5`;
    a φ-family model scaled from another base network adds its (d, w, r): `efficientnet-phi1-d2-r1.3`.

    The B0–B7 presets are named by their own names; MobileNets add the multipliers that differ from 1.
    """
    if phi is not None:
        label = f"{name}-phi{phi:g}"
        if (alpha, beta, gamma) != (ALPHA, BETA, GAMMA):
            label += f"-a{alpha:g}-b{beta:g}-g{gamma:g}"
        return label + "".join(f"-{key}{mult:g}" for key, mult in zip("dwr", base_mults, strict=True) if mult != 1.0)
    if name.startswith("efficientnet_b"):
        return name
    label = name
    if width_mult not in (None, 1.0):
        label += f"-w{width_mult:g}"
    if resolution_mult not in (None, 1.0):
        label += f"-r{resolution_mult:g}"
    return label
