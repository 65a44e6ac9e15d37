"""A sweep's constraint keeps the points whose product lies within target·(1 ± rel_tol); a window that
keeps none names the closest product."""

from __future__ import annotations

from pathlib import Path

import pytest

from phiscale.errors import PhiscaleError
from phiscale.sweeps.constraint import apply_constraint

RULE = {"product": {"model.alpha": 1, "model.beta": 2, "model.gamma": 2}, "target": 2.0, "rel_tol": 0.05}


def test_the_points_inside_the_window_are_kept_with_the_base_filling_in():
    points = [{"model.beta": 1.1, "model.gamma": 1.15}, {"model.beta": 1.3, "model.gamma": 1.3}]
    kept = apply_constraint(RULE, {"model.alpha": 1.2}, points, Path("s.yaml"))
    assert kept == points[:1], "1.2·1.1²·1.15² = 1.92 is inside 2 ± 5%; 1.2·1.3²·1.3² = 3.43 is not"


def test_an_empty_window_names_the_closest_product():
    with pytest.raises(PhiscaleError, match=r"no point lies within 2.0·\(1 ± 0.05\) \(closest: 3.427\)"):
        apply_constraint(RULE, {"model.alpha": 1.2}, [{"model.beta": 1.3, "model.gamma": 1.3}], Path("s.yaml"))
