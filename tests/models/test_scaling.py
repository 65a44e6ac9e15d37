"""Compound scaling: rounding rules, the formula family, and the budget search."""

from __future__ import annotations

import warnings

import pytest
import torch

from phiscale.errors import PhiscaleError
from phiscale.models import build_model, resolve_scale
from phiscale.models.scaling import (
    _formula_measure,
    compound,
    make_divisible,
    phi_for_budget,
    round_filters,
    round_repeats,
)
from phiscale.models.specs import decode_block
from phiscale.profile import count_params


def formula_macs(phi: float) -> int:
    return _formula_measure("efficientnet", float(phi), 1.2, 1.1, 1.15, 1000, 1)[1]


def test_round_filters_rules():
    assert round_filters(32, 1.1) == 32  # 35.2 -> 32 loses 9 % (< 10 %): keep
    assert round_filters(40, 1.4) == 56
    assert round_filters(1280, 1.1) == 1408
    assert make_divisible(3) == 8  # never below 8
    assert make_divisible(17.9) == 24  # 16 would lose > 10 %: one step up
    assert make_divisible(17.7) == 16


def test_round_repeats_is_ceil_without_float_noise():
    assert [round_repeats(n, 1.1) for n in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert round_repeats(10, 1.1) == 11  # 11.000000000000002 must not become 12
    assert round_repeats(4, 3.1) == 13


def test_compound_and_resolution_rounding():
    d, w, r = compound(2.0)
    assert (d, w, r) == pytest.approx((1.44, 1.21, 1.3225))
    scale = resolve_scale("efficientnet", phi=1.0)
    assert scale.resolution == 258  # round(224 * 1.15) = round(257.6)
    assert (scale.depth_mult, scale.width_mult, scale.dropout, scale.drop_path_rate) == pytest.approx(
        (1.2, 1.1, 0.2, 0.2))


def test_compound_warns_when_flops_do_not_double():
    with pytest.warns(UserWarning, match="far from 2"):
        compound(1.0, 2.0, 1.1, 1.15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compound(1.0)  # 1.2 * 1.1^2 * 1.15^2 = 1.92: no warning


def test_formula_at_phi_zero_is_b0():
    b0, f0 = resolve_scale("efficientnet_b0"), resolve_scale("efficientnet", phi=0)
    assert (f0.width_mult, f0.depth_mult, f0.resolution, f0.dropout) == (
        b0.width_mult, b0.depth_mult, b0.resolution, b0.dropout)
    assert f0.phi == 0.0 and b0.phi is None  # the presets are not points of the formula


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


def test_spec_language_decodes_rows():
    block = decode_block("ir_r2_k5_s2_e6_c40_se0.25")
    assert (block.kind, block.repeats, block.kernel, block.stride, block.expand_ratio, block.out,
            block.se_ratio) == ("ir", 2, 5, 2, 6.0, 40, 0.25)
    assert decode_block("ir_k3_s1_x184_c80_hswish").expanded == 184
    for bad in ("zz_c8", "ir_c8", "ir_q3_e6_c8", "ir_e6_x8_c8"):
        with pytest.raises(PhiscaleError):
            decode_block(bad)
