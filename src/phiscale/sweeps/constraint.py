"""A sweep file's `constraint:`: keep the grid points whose product of powers lies in a window, e.g.
the EfficientNet paper's α·β²·γ² ≈ 2 (arXiv:1905.11946, Eq. 3) over a grid of α, β, γ."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phiscale.errors import PhiscaleError

CONSTRAINT_KEYS = ("product", "target", "rel_tol")
Scalar = str | int | float | bool | None  # a value in a sweep file (sweeps/file.py uses it too)


def apply_constraint(
    constraint: Any, base: Mapping[str, Scalar], points: list[dict[str, Scalar]], path: Path
) -> list[dict[str, Scalar]]:
    """Keep the points whose Π key^power lies within target·(1 ± rel_tol) (e.g. α·β²·γ² ≈ 2)."""
    where = f"{path}: constraint"
    if not isinstance(constraint, dict) or set(constraint) != set(CONSTRAINT_KEYS):
        raise PhiscaleError(
            f"{where} needs exactly {', '.join(CONSTRAINT_KEYS)}, e.g. "
            "{product: {model.alpha: 1, model.beta: 2, model.gamma: 2}, target: 2.0, rel_tol: 0.05}"
        )
    product, target, rel_tol = (constraint[k] for k in CONSTRAINT_KEYS)
    if not isinstance(product, dict) or not product:
        raise PhiscaleError(f"{where}: product must map keys to powers, e.g. {{model.alpha: 1}}, got {product!r}")
    for key, power in product.items():
        if not isinstance(power, int | float) or isinstance(power, bool):
            raise PhiscaleError(f"{where}: the power of {key} must be a number, got {power!r}")
    for name, val in (("target", target), ("rel_tol", rel_tol)):
        if not isinstance(val, int | float) or isinstance(val, bool) or val <= 0:
            raise PhiscaleError(f"{where}: {name} must be a positive number, got {val!r}")

    kept, closest = [], None
    for i, point in enumerate(points):
        merged = {**base, **point}
        value = 1.0
        for key, power in product.items():
            if key not in merged:
                raise PhiscaleError(f"{where}: point {i} has no {key}; add it to `grid:` or `base:`")
            if not isinstance(merged[key], int | float) or isinstance(merged[key], bool):
                raise PhiscaleError(f"{where}: {key}={merged[key]!r} in point {i} is not a number")
            value *= float(merged[key]) ** power
        if abs(value / target - 1.0) <= rel_tol + 1e-12:
            kept.append(point)
        if closest is None or abs(value - target) < abs(closest - target):
            closest = value
    if not kept:
        raise PhiscaleError(
            f"{where}: no point lies within {target}·(1 ± {rel_tol}) (closest: {closest:.4g}); "
            "widen rel_tol or change the grid axes"
        )
    return kept
