"""The scaling facts: rounding rules, compound scaling, the base resolution and run names."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from phiscale.models import resolve_scale
from phiscale.models.scaling import (
    BASE_RESOLUTION,
    compound,
    macs_ratio,
    make_divisible,
    round_filters,
    round_repeats,
    run_name,
    scaled_resolution,
)


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


def test_scaled_resolution_rounds_halves_up_and_keeps_the_minimum():
    assert BASE_RESOLUTION == 224
    assert scaled_resolution(224, 1.15) == 258 and scaled_resolution(32, 0.5) == 32
    assert scaled_resolution(100, 1.125, minimum=1) == 113  # 112.5 -> 113


def test_macs_ratio_is_d_w2_r2():
    d, w, r = compound(1.0)
    assert macs_ratio(d, w, r) == pytest.approx(1.2 * 1.1**2 * 1.15**2)


@pytest.mark.parametrize(
    ("name", "knobs", "expected"),
    [
        ("efficientnet", {"phi": 1.5}, "efficientnet-phi1.5"),
        ("efficientnet", {"phi": 1.0}, "efficientnet-phi1"),
        ("efficientnet_b3", {}, "efficientnet_b3"),
        ("mobilenet_v2", {"width_mult": 0.5}, "mobilenet_v2-w0.5"),
        ("mobilenet_v3_small", {"resolution_mult": 0.75}, "mobilenet_v3_small-r0.75"),
    ],
)
def test_run_names_say_the_scale(name, knobs, expected):
    assert resolve_scale(name, **knobs).run_name == expected


def test_run_names_of_other_coefficients_carry_them():
    assert run_name("efficientnet", phi=1, alpha=1.3, beta=1.1, gamma=1.1) == "efficientnet-phi1-a1.3-b1.1-g1.1"


def test_the_scaling_facts_model_names_and_configs_import_no_torch():
    code = ("import sys, phiscale.models.scaling, phiscale.config as c; c.register_model_configs(); "
            "from phiscale.models import MODEL_NAMES; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

