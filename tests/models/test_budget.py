"""Budget mode: the largest φ within a MACs / params / activation-memory budget, on real meta models."""

from __future__ import annotations

import pytest
import torch

from phiscale.errors import PhiscaleError
from phiscale.models import build_model
from phiscale.models.budget import _formula_measure, phi_for_budget
from phiscale.models.profile import count_params


def formula_macs(phi: float) -> int:
    return _formula_measure("efficientnet", float(phi), 1.2, 1.1, 1.15, 1000, 1)[1]


def test_macs_grow_monotonically_and_about_double_per_phi():
    grid = [0, 0.5, 1, 2, 3, 4, 5]
    macs = [formula_macs(phi) for phi in grid]
    assert macs == sorted(macs) and len(set(macs)) == len(macs), f"MACs not increasing along {grid}: {macs}"
    # From phi=1 on, each unit of phi multiplies MACs by about alpha*beta^2*gamma^2 = 1.92. (0 -> 1 is
    # 2.57: ceil(d*n) adds a block to every stage as soon as d > 1, exactly as B0 -> B1 does.)
    for phi in (1, 2, 3, 4):
        ratio = formula_macs(phi + 1) / formula_macs(phi)
        assert 1.6 <= ratio <= 2.4, f"MACs(phi={phi + 1}) / MACs(phi={phi}) = {ratio:.2f}"


def test_phi_for_budget_finds_the_largest_phi_within_macs():
    budget = formula_macs(2.0)
    phi = phi_for_budget(max_macs=budget, phi_max=3.0, tol=0.1)
    assert phi >= 2.0
    assert formula_macs(phi) <= budget < formula_macs(round(phi + 0.1, 10))


def test_phi_for_budget_with_params_and_memory():
    with torch.device("meta"):
        b0_params = count_params(build_model("efficientnet"))
    assert phi_for_budget(max_params=b0_params, phi_max=3.0, tol=0.05) == 0.0  # any phi > 0 adds blocks
    assert phi_for_budget(max_params=1e12, phi_max=3.0) == 3.0  # the whole range fits
    memory = _formula_measure("efficientnet", 1.0, 1.2, 1.1, 1.15, 1000, 2)[2]
    phi = phi_for_budget(max_memory=memory, max_macs=1e15, phi_max=2.0, tol=0.25)
    assert 1.0 <= phi < 2.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "at least one budget"),
        ({"max_macs": 1e6}, "even phi=0"),
        ({"max_macs": -5}, "max_macs=-5"),
        ({"name": "mobilenet_v2", "max_macs": 1e9}, "only the 'efficientnet'"),
    ],
)
def test_phi_for_budget_rejects_bad_budgets(kwargs, match):
    with pytest.raises(PhiscaleError, match=match):
        phi_for_budget(**kwargs)


