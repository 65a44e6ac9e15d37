"""phiscale-sweep: the listing of a sweep's points (table or JSON) and the commands that train them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from phiscale.cli.sweep import describe, format_table, main
from phiscale.sweeps import load_sweep

ROOT = Path(__file__).resolve().parents[2]


def test_cli_lists_points_and_prints_both_commands(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["sweeps/phi.yaml", "trainer=gpu"]) == 0
    out = capsys.readouterr().out
    assert "phi: 8 points from sweeps/phi.yaml" in out
    assert re.search(r"^\s*3\s+model\.phi=3\s+1\.728\s+1\.331\s+1\.521\s+7\.081$", out, re.M), out
    assert "sbatch --array=0-7 slurm/sweep.sbatch sweeps/phi.yaml trainer=gpu" in out
    assert "phiscale-train -m sweep.file=sweeps/phi.yaml 'sweep.index=range(0,8)' trainer=gpu" in out

    assert main(["sweeps/abg_grid.yaml", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == len(info["points"]) < info["grid_size"]
    assert info["sbatch"] == f"sbatch --array=0-{info['size'] - 1} slurm/sweep.sbatch sweeps/abg_grid.yaml"
    assert info["points"][0]["overrides"][:2] == ["model=efficientnet", "model.phi=1"]


def test_cli_error_is_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing.yaml")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.yaml not found" in err


def test_a_parallel_limit_below_one_is_refused_in_one_line(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweeps/phi.yaml", "--max-parallel", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--max-parallel 0 must be at least 1" in err
    assert main(["sweeps/phi.yaml", "--max-parallel", "2"]) == 0
    assert "sbatch --array=0-7%2 slurm/sweep.sbatch sweeps/phi.yaml" in capsys.readouterr().out


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
