"""A sweep file's runs as data (plain, what --format json prints) and as the table `list` prints: preset
points without d, w, r columns, a constrained grid saying how many points it kept."""

from __future__ import annotations

import json
from pathlib import Path

from phiscale.sweeps.file import load_sweep
from phiscale.sweeps.listing import describe, format_table

ROOT = Path(__file__).resolve().parents[2]


def test_preset_points_have_no_d_w_r_columns(monkeypatch):
    monkeypatch.chdir(ROOT)
    table = format_table(describe(load_sweep("sweeps/efficientnet_b0_b7.yaml")))
    header = next(line for line in table.splitlines() if line.lstrip().startswith("#"))
    assert header.split() == ["#", "overrides"], "the presets' shapes are not d·w·r of a formula"
    assert "MACs×" not in table and "model=efficientnet_b7" in table
    assert "efficientnet_b0_b7: 8 points from sweeps/efficientnet_b0_b7.yaml" in table


def test_a_constrained_grid_says_how_many_points_it_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    info = describe(load_sweep("sweeps/abg_grid.yaml"), ["trainer=gpu"], max_parallel=3)
    first_line = format_table(info).splitlines()[0]
    assert f"({info['grid_size']} in the grid, {info['size']} inside the constraint)" in first_line
    assert info["sbatch"].endswith("slurm/sweep.sbatch sweeps/abg_grid.yaml trainer=gpu")
    assert f"--array=0-{info['size'] - 1}%3" in info["sbatch"] and info["multirun"].endswith("trainer=gpu")
    assert json.loads(json.dumps(info)) == info, "the listing is plain data (what --format json prints)"
