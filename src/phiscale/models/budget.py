"""Budget mode: the largest φ whose model fits a MACs, parameter or activation-memory budget.

Each candidate is a real model built on the meta device and measured with `phiscale.models.profile`,
so this module sits above the builder and the profiler (neither imports it).
"""

from __future__ import annotations

import functools
import math
import warnings

import torch

from phiscale.errors import PhiscaleError
from phiscale.models.build import build_model
from phiscale.models.profile import count_macs, count_params, profile_model
from phiscale.models.scaling import ALPHA, BETA, GAMMA, check_flops_growth, check_positive


@functools.lru_cache(maxsize=512)
def _formula_measure(name: str, phi: float, alpha: float, beta: float, gamma: float, num_classes: int,
                     level: int) -> tuple[int, int, int]:
    """(params, MACs, activation bytes) of one formula model built on the meta device (shapes only).

    level 0 counts parameters only, 1 adds MACs, 2 adds activation memory; what is not measured is 0.
    """
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
    `max_params`, `max_memory` (activation bytes per image, see `phiscale.models.profile`): the
    constraints FLOPs(N) <= target and Memory(N) <= target. Each candidate is a real
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
        check_positive(key, value)
    for key, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        check_positive(key, value)
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
