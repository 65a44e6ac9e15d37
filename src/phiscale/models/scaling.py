"""Compound scaling (EfficientNet, Tan & Le 2019, arXiv:1905.11946, Sec. 3.3) and its rounding rules.

Every channel count and repeat count in `phiscale.models` goes through `round_filters` and
`round_repeats` here, so a width or depth multiplier is applied in exactly one way.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings

from phiscale.errors import PhiscaleError

# EfficientNet paper, Sec. 3.3: a grid search at φ=1 found α=1.2, β=1.1, γ=1.15 under
# α·β²·γ² ≈ 2, so that FLOPs grow by about 2^φ.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
FLOPS_GROWTH_TARGET = 2.0


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


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise PhiscaleError(f"{name}={value!r} must be a finite number > 0 (e.g. {_EXAMPLES.get(name, '1.0')})")


_EXAMPLES = {"alpha": "1.2", "beta": "1.1", "gamma": "1.15", "max_macs": "4e8", "max_params": "5e6",
             "max_memory": "5e7"}


def check_phi(phi: float) -> float:
    """Validate φ: a finite real number >= 0 (φ=0 is EfficientNet-B0)."""
    if isinstance(phi, bool) or not isinstance(phi, numbers.Real) or not math.isfinite(phi) or phi < 0:
        raise PhiscaleError(f"phi={phi!r} must be a finite number >= 0 (phi=0 is EfficientNet-B0; try phi=1)")
    return float(phi)


def compound(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA) -> tuple[float, float, float]:
    """Depth, width and resolution multipliers for compound coefficient φ: (α^φ, β^φ, γ^φ).

    Paper Eq. 3. Warns (once per call site) when α·β²·γ² is far from 2.
    """
    phi = check_phi(phi)
    for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        _check_positive(name, value)
    check_flops_growth(alpha, beta, gamma)
    return alpha**phi, beta**phi, gamma**phi


def scaled_resolution(base: int, resolution_mult: float, minimum: int = 32) -> int:
    """Input side after the resolution multiplier: nearest integer to base·r (halves round up), >= `minimum`.

    The official B1–B7 resolutions are not multiples of 8 or 32 either (240, 260, 380, …), so no
    further rounding is applied; `minimum` is the network's total stride, below which the last
    stage would see less than one pixel.
    """
    return max(minimum, int(math.floor(base * resolution_mult + 0.5)))


@functools.lru_cache(maxsize=512)
def _formula_measure(name: str, phi: float, alpha: float, beta: float, gamma: float, num_classes: int,
                     level: int) -> tuple[int, int, int]:
    """(params, MACs, activation bytes) of one formula model built on the meta device (shapes only).

    level 0 counts parameters only, 1 adds MACs, 2 adds activation memory; what is not measured is 0.
    """
    import torch

    from phiscale.models.build import build_model
    from phiscale.profile import count_macs, count_params, profile_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the alpha*beta^2*gamma^2 warning was given once already
        with torch.device("meta"):
            model = build_model(name, num_classes, phi=phi, alpha=alpha, beta=beta, gamma=gamma)
    if level < 2:
        return count_params(model), count_macs(model, model.scale.resolution) if level else 0, 0
    prof = profile_model(model, model.scale.resolution)
    return prof.params, prof.macs, prof.activation_bytes


def phi_for_budget(
    name: str = "efficientnet",
    *,
    max_macs: float | None = None,
    max_params: float | None = None,
    max_memory: float | None = None,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
    num_classes: int = 1000,
    phi_max: float = 10.0,
    tol: float = 0.01,
) -> float:
    """The largest φ (on a grid of step `tol` in [0, phi_max]) whose built model fits every budget.

    Budgets: `max_macs` (multiply-adds per image at the model's own resolution γ^φ·224),
    `max_params`, `max_memory` (activation bytes per image, see `phiscale.profile`) — the
    seed's constraints FLOPs(N) <= target and Memory(N) <= target. Each candidate is a real
    model built on the meta device and measured with `profile_model`; the search is a
    bisection, valid because every measure is non-decreasing in φ when α, β, γ >= 1.
    Results are memoised, so repeated searches (a sweep of budgets) cost little.
    """
    if name != "efficientnet":
        raise PhiscaleError(
            f"phi_for_budget(name={name!r}): only the 'efficientnet' formula family has a phi; "
            "use name='efficientnet' (or pick a MobileNet width by hand)"
        )
    budgets = {"max_macs": max_macs, "max_params": max_params, "max_memory": max_memory}
    given = {k: v for k, v in budgets.items() if v is not None}
    if not given:
        raise PhiscaleError("phi_for_budget needs at least one budget: pass max_macs=, max_params= or max_memory=")
    for key, value in given.items():
        _check_positive(key, value)
    for key, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        _check_positive(key, value)
    if not (math.isfinite(phi_max) and phi_max >= 0):
        raise PhiscaleError(f"phi_max={phi_max!r} must be a finite number >= 0 (e.g. 10)")
    if not (math.isfinite(tol) and tol > 0):
        raise PhiscaleError(f"tol={tol!r} must be a finite number > 0 (e.g. 0.01)")
    check_flops_growth(alpha, beta, gamma)

    # Measure no more than the budgets need: params need no forward pass, MACs no memory tracking.
    level = 2 if max_memory is not None else 1 if max_macs is not None else 0

    def measure(step: int) -> tuple[int, int, int]:
        return _formula_measure(name, round(step * tol, 10), alpha, beta, gamma, num_classes, level)

    def fits(step: int) -> bool:
        params, macs, memory = measure(step)
        return (
            (max_macs is None or macs <= max_macs)
            and (max_params is None or params <= max_params)
            and (max_memory is None or memory <= max_memory)
        )

    if not fits(0):
        params, macs, memory = measure(0)
        measured = ", ".join([f"{params:,} params"] + [f"{macs:,} MACs"] * (level >= 1)
                             + [f"{memory:,} activation bytes"] * (level == 2))
        raise PhiscaleError(
            f"even phi=0 (EfficientNet-B0: {measured}) exceeds the budget "
            f"{', '.join(f'{k}={v:g}' for k, v in given.items())}; raise the budget or use a smaller model "
            "(e.g. mobilenet_v3_small)"
        )
    lo, hi = 0, int(math.floor(phi_max / tol + 1e-9))  # fits(lo) is known; search (lo, hi]
    if fits(hi):
        return round(hi * tol, 10)
    while hi - lo > 1:  # invariant: fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return round(lo * tol, 10)
