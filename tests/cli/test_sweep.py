"""phiscale-sweep: the listing of a sweep's runs (table or JSON) and the commands that train them; status
and resume of a recorded sweep (its runs in a real sqlite store; SLURM absent or refusing); and the
one-line errors. Submitting to the real cluster: tests/slurm/test_sweep_lifecycle.py; --local:
tests/end_to_end/test_local_sweep_with_seeds.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from phiscale.cli.sweep import main

ROOT = Path(__file__).resolve().parents[2]


def test_cli_lists_points_and_prints_both_commands(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["sweeps/phi.yaml", "trainer=gpu"]) == 0
    out = capsys.readouterr().out
    assert "phi: 8 points from sweeps/phi.yaml" in out
    assert re.search(r"^\s*3\s+model\.phi=3\s+1\.728\s+1\.331\s+1\.521\s+7\.081$", out, re.M), out
    assert "sbatch --array=0-7 slurm/sweep.sbatch sweeps/phi.yaml trainer=gpu" in out
    assert "phiscale-train -m sweep.file=sweeps/phi.yaml 'sweep.index=range(0,8)' trainer=gpu" in out

    assert "phiscale-sweep submit sweeps/phi.yaml trainer=gpu" in out

    assert main(["list", "sweeps/abg_grid.yaml", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["size"] == info["points"] == len(info["runs"]) < info["grid_size"]
    assert info["sbatch"] == f"sbatch --array=0-{info['size'] - 1} slurm/sweep.sbatch sweeps/abg_grid.yaml"
    assert info["runs"][0]["overrides"][:2] == ["model=efficientnet", "model.phi=1"]


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


def test_a_seeded_sweep_lists_every_run_and_says_how_runs_map_to_points(tmp_path, capsys):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\nbase: [model=efficientnet]\ngrid: {model.phi: [0, 1]}\nseeds: [5, 6]\n")
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert f"s: 2 points from {sweep} × 2 seeds = 4 runs (run i: point i // 2)" in out
    assert re.search(r"^3\s+model\.phi=1 seed=6\s", out, re.M), out
    assert "--array=0-3" in out


# ---------------------------------------------------------------- status and resume -----
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_status_shows_each_run_and_the_counts_last_and_sets_the_parent(tmp_path, store, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient
    from support.sweeps import HEARTBEAT_S, Child, log_child, recorded_sweep

    monkeypatch.delenv("SLURM_CONF", raising=False)
    record = recorded_sweep(tmp_path, store, experiment="status")
    log_child(record, 0, Child(top1=0.9612, images_per_s=1234.5))
    log_child(record, 1, Child(status="RUNNING", restarts=1, top1=0.5))
    log_child(record, 2, Child(status="RUNNING", silent_s=10 * HEARTBEAT_S))
    log_child(record, 3, Child(status="KILLED"))
    log_child(record, 4, Child(status="FAILED", top1=None, images_per_s=None))
    assert main(["status", "duo", "--root", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"sweep {record.id} (duo, 6 runs) from {tmp_path / 'sweep.yaml'}"
    assert f"parent run {record.parent_run_id} (RUNNING)" in lines[1]
    table = {int(line.split()[0]): line for line in lines if re.match(r"^\d+\s", line)}
    assert re.search(r"model\.phi=0 seed=0\s+finished\s+0\s+0\.9612\s+1234\.5$", table[0]), table[0]
    assert re.search(r"seed=1\s+running\s+1\s+0\.5000", table[1]), table[1]
    assert [table[i].split()[3] for i in range(2, 6)] == ["lost", "cancelled", "failed", "missing"]
    assert lines[-1] == "running 1  finished 1  failed 1  cancelled 1  lost 1  missing 1"
    assert MlflowClient(store).get_run(record.parent_run_id).info.status == "RUNNING"

    assert main(["status", record.id, "--root", str(tmp_path / "out"), "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["id"] == record.id and [r["state"] for r in info["runs"]][:2] == ["finished", "running"]
    assert info["runs"][5]["output_dir"] == str(record.directory / "points" / "5")


def test_resume_of_a_complete_sweep_does_nothing(tmp_path, store, capsys):
    from mlflow.tracking import MlflowClient
    from support.sweeps import Child, log_child, recorded_sweep

    record = recorded_sweep(tmp_path, store, experiment="complete",
                            text="name: done\nbase: [model=efficientnet]\ngrid: {model.phi: [0, 1]}\n")
    for index in (0, 1):
        log_child(record, index, Child())
    assert main(["resume", "done", "--root", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == (
        f"sweep {record.id} is complete: all 2 runs finished; nothing to resume (parent run FINISHED)")
    assert MlflowClient(store).get_run(record.parent_run_id).info.status == "FINISHED"
    assert json.loads(record.path.read_text())["submissions"] == [], "nothing was launched"


def test_resume_names_sbatchs_refusal_in_one_line(tmp_path, store, capsys, monkeypatch):
    """A SLURM sweep resumed where sbatch cannot reach a cluster: one line with sbatch's own reason."""
    from support.sweeps import Child, log_child, recorded_sweep

    from phiscale.sweeps.record import Submission, add_submission

    monkeypatch.delenv("SLURM_CONF", raising=False)
    record = recorded_sweep(tmp_path, store, experiment="refused",
                            text="name: refused\nbase: [model=efficientnet]\ngrid: {model.phi: [0, 1, 2]}\n")
    add_submission(record, Submission("slurm", [0, 1, 2], "sbatch ...", "t", array_job_id="99999"))
    log_child(record, 1, Child())
    with pytest.raises(SystemExit) as exit_info:
        main(["resume", record.id, "--root", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and f"sweep {record.id}: resuming runs 0,2 (0 missing, 2 missing)" in out
    assert err.count("\n") == 1 and ": error: sbatch refused the sweep: sbatch: " in err


def test_an_unknown_sweep_and_sbatch_args_with_local_are_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit):
        main(["status", "nope", "--root", str(tmp_path)])
    assert "no sweep 'nope' under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["submit", "sweeps/phi.yaml", "--local", "--sbatch-arg=--time=5"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--sbatch-arg --time=5 has no effect with --local" in err


def test_list_of_a_study_shows_both_stages_and_the_one_command_that_chains_them(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["list", "sweeps/compound_digits.yaml"]) == 0
    out = capsys.readouterr().out
    assert "stage search (study runs from 0):" in out and "stage scale (study runs from 4):" in out
    assert "SLURM array:" not in out, "a stage's points are not trained by a plain array"
    assert out.rstrip().endswith("queues both stages: the scale stage after the search, with the search winner's "
                                 "model.alpha, model.beta, model.gamma")
    assert main(["list", "sweeps/compound_digits.yaml", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in info["stages"]] == ["search", "scale"] and len(info["stages"][0]["runs"]) == 4
