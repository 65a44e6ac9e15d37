"""Scaling series: one dimension at a time against compound scaling, at shared FLOPs targets.

The EfficientNet paper (Tan & Le 2019, arXiv:1905.11946) rests on three comparisons: scaling width,
depth or resolution alone gains less and less (Figure 3); width scaling pays more from a deeper,
higher-resolution baseline (Figure 4); and at equal FLOPs compound scaling beats each single
dimension (Figure 8). A sweep file names such series and the levels they share:

    levels: [0, 1, 2]        # φ: the MACs of every series grow about 2^φ (d·w²·r², Eq. 3)
    series:
      width:      {model.alpha: 1, model.beta: 1.41421356, model.gamma: 1}     # w = 2^(φ/2)
      depth:      {model.alpha: 2, model.beta: 1, model.gamma: 1}              # d = 2^φ
      resolution: {model.alpha: 1, model.beta: 1, model.gamma: 1.41421356}     # r = 2^(φ/2)
      compound:   {model.alpha: 1.2, model.beta: 1.1, model.gamma: 1.15}       # α^φ, β^φ, γ^φ
      width_d2_r1.3: {model.alpha: 1, model.beta: 1.41421356, model.gamma: 1,
                      model.depth_mult: 2, model.resolution_mult: 1.3}         # Figure 4's baselines

A series' point at level φ is its overrides and `model.phi=φ`. At φ = 0 the coefficients scale
nothing, so series that start from the same base network (the same other keys) share one run there.
Every run is tagged with its series (comma-separated where shared), its level and the MACs ratio the
formula asks of that level over the series' base, (α·β²·γ²)^φ; the report places each run by its
measured MACs, since channel, block and stride rounding move small networks off the formula.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from phiscale.errors import PhiscaleError
from phiscale.models.scaling import ALPHA, BETA, GAMMA, check_phi, flops_growth

COEFFICIENT_KEYS = {"model.alpha": ALPHA, "model.beta": BETA, "model.gamma": GAMMA}
PHI_KEY = "model.phi"
# MLflow tags of a series run; the report groups runs by them.
SERIES_TAG, LEVEL_TAG, TARGET_TAG = "series", "series_level", "series_macs_target"


def expand_series(series: Any, levels: Any, where: str) -> tuple[list[dict], list[dict[str, str]]]:
    """The points of every series at every level (shared φ = 0 points once) and each point's tags."""
    if series is None and levels is None:
        return [], []
    if not isinstance(series, dict) or not series:
        raise PhiscaleError(f"{where}: series must map each series' name to its overrides, e.g. "
                            "{depth: {model.alpha: 2, model.beta: 1, model.gamma: 1}}; got " + repr(series))
    phis = _levels(levels, where)
    points: list[dict] = []
    tags: list[dict[str, str]] = []
    index_of: dict[tuple, int] = {}
    for name, overrides in series.items():
        overrides = _series_overrides(str(name), overrides, where)
        coefficients = [float(overrides.get(key, default)) for key, default in COEFFICIENT_KEYS.items()]
        growth = flops_growth(*coefficients)
        for phi in phis:
            point = ({k: v for k, v in overrides.items() if k not in COEFFICIENT_KEYS} if phi == 0
                     else dict(overrides)) | {PHI_KEY: phi}
            key = tuple(sorted((k, repr(v)) for k, v in point.items()))
            if key in index_of:  # a shared base: this series runs there too
                shared = tags[index_of[key]]
                shared[SERIES_TAG] += f",{name}"
                continue
            index_of[key] = len(points)
            points.append(point)
            tags.append({SERIES_TAG: str(name), LEVEL_TAG: f"{phi:g}", TARGET_TAG: f"{growth ** phi:.6g}"})
    return points, tags


def series_names(tags: Mapping[str, str]) -> list[str]:
    """The series a run belongs to (a shared base run belongs to several)."""
    value = tags.get(SERIES_TAG) or ""
    return [name for name in value.split(",") if name]


def _levels(levels: Any, where: str) -> list[float]:
    example = "e.g. levels: [0, 1, 2]"
    if not isinstance(levels, list) or not levels:
        raise PhiscaleError(f"{where}: series need levels: a list of φ values, {example}; got {levels!r}")
    out = []
    for value in levels:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PhiscaleError(f"{where}: level {value!r} is not a number; {example}")
        check_phi(value)
        out.append(value)
    if len(set(out)) != len(out):
        raise PhiscaleError(f"{where}: levels {levels} list a φ twice; {example}")
    return sorted(out)


def _series_overrides(name: str, overrides: Any, where: str) -> dict:
    if not isinstance(overrides, dict):
        raise PhiscaleError(f"{where}: series {name!r} must be a mapping of overrides like "
                            f"{{model.alpha: 2, model.beta: 1, model.gamma: 1}}, got {overrides!r}")
    if PHI_KEY in overrides:
        raise PhiscaleError(f"{where}: series {name!r} sets {PHI_KEY}; the file's levels: give every series its φ")
    for key in COEFFICIENT_KEYS:
        value = overrides.get(key, 1.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise PhiscaleError(f"{where}: series {name!r}: {key}={value!r} must be a number > 0")
    return dict(overrides)
