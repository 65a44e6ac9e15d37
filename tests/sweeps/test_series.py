"""Scaling series in a sweep file: every series at every level, the φ = 0 base shared by the series that
start from it, each point tagged with its series, level and MACs target; bad series in one line."""

from __future__ import annotations

import pytest

from phiscale.errors import PhiscaleError
from phiscale.sweeps.file import parse_sweep
from phiscale.sweeps.listing import describe, format_table
from phiscale.sweeps.series import expand_series, series_names

ROOT2 = 2**0.5
SERIES = {"width": {"model.alpha": 1, "model.beta": ROOT2, "model.gamma": 1},
          "depth": {"model.alpha": 2, "model.beta": 1, "model.gamma": 1},
          "compound": {"model.alpha": 1.2, "model.beta": 1.1, "model.gamma": 1.15},
          "width_d2": {"model.alpha": 1, "model.beta": ROOT2, "model.gamma": 1, "model.depth_mult": 2}}


def test_series_share_their_base_and_tag_series_level_and_target(tmp_path):
    sweep = parse_sweep({"base": ["model=efficientnet"], "levels": [0, 1, 2], "series": SERIES, "seeds": [0, 1]},
                        tmp_path / "dims.yaml")
    # 1 base shared by width, depth, compound; width_d2 starts from its own (d=2) base: 2 + 4 series × 2 levels.
    assert len(sweep.points) == 2 + 4 * 2 and len(sweep) == 2 * len(sweep.points)
    assert sweep.points[0] == ["model.phi=0"] and sweep.own_tags(0)["series"] == "width,depth,compound"
    assert sweep.points[7] == ["model.depth_mult=2", "model.phi=0"]
    assert sweep.run_tags(1) == {"series": "width,depth,compound", "series_level": "0",
                                      "series_macs_target": "1", "sweep": "dims", "sweep_index": "1",
                                      "sweep_point": "0", "seed": "1"}
    compound = sweep.own_tags(2 * sweep.points.index(
        ["model.alpha=1.2", "model.beta=1.1", "model.gamma=1.15", "model.phi=2"]))
    assert compound["series_level"] == "2" and float(compound["series_macs_target"]) == pytest.approx(
        (1.2 * 1.1**2 * 1.15**2) ** 2, rel=1e-5)
    depth2 = sweep.points.index(["model.alpha=2", "model.beta=1", "model.gamma=1", "model.phi=2"])
    assert sweep.scale(2 * depth2).macs_ratio == pytest.approx(4.0)
    width_d2 = sweep.scale(2 * sweep.points.index(
        ["model.alpha=1", f"model.beta={ROOT2!r}", "model.gamma=1", "model.depth_mult=2", "model.phi=1"]))
    assert (width_d2.depth_mult, width_d2.width_mult) == pytest.approx((2.0, ROOT2)), "the base's d times β^φ's w"
    assert series_names(sweep.own_tags(0)) == ["width", "depth", "compound"]


def test_the_listing_names_the_series_and_a_column_per_run(tmp_path):
    sweep = parse_sweep({"levels": [0, 1], "series": {k: SERIES[k] for k in ("width", "depth")}},
                        tmp_path / "two.yaml")
    info = describe(sweep)
    assert info["series"] == ["width", "depth"] and [r["level"] for r in info["runs"]] == [0, 1, 1]
    text = format_table(info)
    assert "series: width, depth at φ = 0, 1" in text
    assert text.splitlines()[5].split()[:2] == ["0", "width,depth"]


@pytest.mark.parametrize("raw, match", [
    ({"series": {"w": SERIES["width"]}}, r"series need levels: a list of φ values, e\.g\. levels: \[0, 1, 2\]"),
    ({"series": {"w": SERIES["width"]}, "levels": [0, -1]}, "phi=-1 must be a finite number >= 0"),
    ({"series": {"w": SERIES["width"]}, "levels": [1, 1]}, r"levels \[1, 1\] list a φ twice"),
    ({"series": {"w": {"model.phi": 1}}, "levels": [0]}, "series 'w' sets model.phi; the file's levels"),
    ({"series": {"w": {"model.beta": 0}}, "levels": [0]}, r"series 'w': model.beta=0 must be a number > 0"),
    ({"series": [1], "levels": [0]}, "series must map each series' name to its overrides"),
    ({"series": {"w": SERIES["width"]}, "levels": [0, 1], "constraint": {}}, "constraint: and series: do not mix"),
])
def test_bad_series_are_refused_in_one_line(tmp_path, raw, match):
    with pytest.raises(PhiscaleError, match=match) as err:
        parse_sweep(raw, tmp_path / "bad.yaml")
    assert "\n" not in str(err.value)


def test_no_series_no_points():
    assert expand_series(None, None, "x") == ([], [])
