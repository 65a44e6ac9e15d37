"""The report's scaling series: a curve per series by measured MACs, a table per level with the best
marked and its margin's standard error, the shared base in every series, and the rounding named where a
point's measured MACs leave its level's target by more than 15%."""

from __future__ import annotations

import pytest

from phiscale.report.rows import RunRow
from phiscale.report.series import (
    PLOT_SERIES,
    level_winners,
    rounding_notes,
    series_points,
    write_series,
)


def row(name: str, series: str, level: float, macs: float, top1: float, std: float, target: float) -> RunRow:
    return RunRow(run_id=name, run_name=name, model="efficientnet", family="efficientnet", phi=level,
                  depth_mult=None, width_mult=None, resolution_mult=None, resolution=None, params=1e6, macs=macs,
                  top1=top1, images_per_s=None, device_hours=None, status="FINISHED", top1_std=std, runs=2,
                  series=series, series_level=level, series_macs_target=target)


ROWS = [
    row("base", "width,depth,compound", 0, 6e6, 0.85, 0.002, 1.0),
    row("w1", "width", 1, 11.7e6, 0.860, 0.002, 2.0),
    row("d1", "depth", 1, 9.8e6, 0.855, 0.003, 2.0),  # ×1.63: blocks round up to whole ones
    row("c1", "compound", 1, 15.5e6, 0.870, 0.002, 1.92),  # ×2.59 for ×1.92
]


def test_the_shared_base_starts_every_series_and_ratios_are_measured_over_it():
    points = series_points(ROWS)
    assert list(points) == ["width", "depth", "compound"]
    assert [p.row.run_name for p in points["depth"]] == ["base", "d1"]
    assert points["depth"][1].macs_ratio == pytest.approx(9.8 / 6) and points["depth"][1].target == 2.0


def test_each_level_has_its_best_and_the_margin_with_its_standard_error():
    winners = level_winners(series_points(ROWS))
    assert winners[0] is None, "one shared point: nothing to compare"
    best, margin, se = winners[1]
    assert best == "compound" and margin == pytest.approx(0.01)
    assert se == pytest.approx((0.002**2 / 2 + 0.002**2 / 2) ** 0.5)


def test_points_off_their_target_name_the_rounding():
    notes = rounding_notes(series_points(ROWS))
    assert [n.split(":")[0] for n in notes] == ["depth φ=1", "compound φ=1"]
    assert "measured ×1.63 of the series' base, the formula's ×2.00 (-18%)" in notes[0]


def test_the_section_has_a_column_per_series_the_best_in_bold_and_its_plot(tmp_path):
    section, files = write_series(ROWS, tmp_path)
    assert [f.name for f in files] == [PLOT_SERIES] and files[0].stat().st_size > 10_000
    lines = section.splitlines()
    assert "| φ | width | depth | compound | best | margin |" in lines
    level1 = next(line for line in lines if line.startswith("| 1 |"))
    assert "**0.8700 ± 0.0020 (×2.58)**" in level1 and level1.endswith("| compound | +0.0100 ± 0.0020 |")
    assert write_series([row("x", "", 0, 1e6, 0.5, 0.0, 1.0)], tmp_path) is None
