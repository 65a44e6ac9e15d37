"""A recorded sweep on the real SLURM testbed: `phiscale-sweep submit` queues one array and returns,
`scancel` stops one task mid-run, `status` sees it cancelled and the others finished, `resume`
resubmits exactly that index, which resumes from its checkpoint into its own MLflow run; in the end
three finished children under one parent.

Run against a testbed of your own when others use the default one:
    PHISCALE_SLURM_DIR=/tmp/phiscale-slurm-sweeps PHISCALE_SLURM_PORT=17817 pytest -m slurm tests/slurm
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from support.runs import NO_MODEL, wait_for
from support.slurm_sweeps import logs, sweep_cli

from phiscale.tracking.journal import RunRecord

pytestmark = pytest.mark.slurm

ACCURACY = 0.95  # best val top-1 every point must reach (the bar for the digits recipe)
# The digits demo, shortened: 10 epochs with a milder crop and a higher rate reach ~96% in about
# 20 s of CPU each (measured on seeds 0-2; the recipe's own 12 epochs reach ~97%).
RECIPE = ["experiment=digits_demo", "trainer.max_epochs=10", "data.min_crop_scale=0.8", "optim.lr_per_256=0.8",
          "trainer.progress_bar=false", "data.num_workers=1", NO_MODEL]
TRIO = "name: trio\ndescription: the digits recipe, three seeds as three points\ngrid:\n  seed: [0, 1, 2]\n"


def status_json(slurm, cwd: Path, sweep_id: str) -> dict:
    done = sweep_cli(slurm, cwd, "status", sweep_id, "--root", str(cwd / "out"), "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_submit_cancel_status_resume_ends_with_three_finished_children(slurm, tmp_path):
    from mlflow.tracking import MlflowClient

    (tmp_path / "trio.yaml").write_text(TRIO)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = [f"paths.root={tmp_path}/out", f"tracking.uri={uri}", "tracking.experiment=trio"]
    started = time.monotonic()
    submitted = sweep_cli(slurm, tmp_path, "submit", "trio.yaml", *RECIPE, *store, "--sbatch-arg=--time=60")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    sweep_id = re.search(r"^sweep (\S+): 3 runs of trio", submitted.stdout, re.M).group(1)
    record_dir = tmp_path / "out" / "sweeps" / sweep_id
    record = json.loads((record_dir / "sweep.json").read_text())
    job = record["submissions"][0]["array_job_id"]
    assert f"queued SLURM array job {job}: sbatch --array=0-2 " in submitted.stdout

    # Cancel run 1 once it has a checkpoint (its signal handlers are in place; it is mid-run) and its MLflow
    # run is open (the sender opens it after the first step: on a loaded machine, after the checkpoint too).
    ckpt = record_dir / "points" / "1" / "checkpoints" / "last.ckpt"
    tracking = record_dir / "points" / "1" / "tracking"
    wait_for(lambda: ckpt.exists() and getattr(RunRecord.load(tracking), "run_id", None), 900,
             f"run 1 of {sweep_id} wrote no {ckpt} or opened no MLflow run",
             details=lambda: logs(record_dir) + slurm.log_tails())
    slurm.run("scancel", f"{job}_1")
    cancelled_at = time.monotonic()
    tasks = {int(r["ArrayTaskId"]): r["JobState"] for r in slurm.wait(job, timeout=1200)}
    assert tasks == {0: "COMPLETED", 1: "CANCELLED", 2: "COMPLETED"}, f"{tasks}\n{logs(record_dir)}"

    info = status_json(slurm, tmp_path, sweep_id)
    assert [r["state"] for r in info["runs"]] == ["finished", "cancelled", "finished"], info
    assert info["parent_status"] == "KILLED", "only a cancellation is left"
    first_run = info["runs"][1]["run_id"]
    assert first_run, "run 1 had opened its MLflow run before the cancel"

    resumed = sweep_cli(slurm, tmp_path, "resume", sweep_id, "--root", str(tmp_path / "out"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"sweep {sweep_id}: resuming runs 1 (1 cancelled)" in resumed.stdout
    second = json.loads((record_dir / "sweep.json").read_text())["submissions"][-1]
    assert second["indices"] == [1] and "--array=1 " in second["command"], second
    assert f"queued SLURM array job {second['array_job_id']}" in resumed.stdout
    (task,) = slurm.wait(second["array_job_id"], timeout=1200)
    assert task["JobState"] == "COMPLETED", logs(record_dir)
    log = (record_dir / "points" / "1" / f"slurm-{second['array_job_id']}_1.out").read_text()
    assert re.search(rf"resuming {first_run} from \S+points/1/checkpoints/last\.ckpt \(restart 1\)", log), log

    info = status_json(slurm, tmp_path, sweep_id)
    assert [r["state"] for r in info["runs"]] == ["finished"] * 3 and info["parent_status"] == "FINISHED", info
    assert info["runs"][1]["run_id"] == first_run and info["runs"][1]["restarts"] == 1, "resumed into its own run"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("trio")
    parent = client.get_run(record["parent_run_id"])
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["phiscale.slurm_array_job_id"] == (
        f"{job},{second['array_job_id']}")
    top1 = {int(r.data.tags["sweep_index"]): r.data.metrics["val/top1_best"] for r in children}
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children), top1
    assert all(value >= ACCURACY for value in top1.values()), f"best val top-1 per run: {top1}"
    print(f"sweep {sweep_id}: cancel {cancelled_at - started:.0f}s after submit, all finished after "
          f"{time.monotonic() - started:.0f}s; best val top-1 {top1}")


SUBMIT_BOUND_S = 60  # generous: ~4.5 s of CPU, on a 2-core machine shared with other test runs


def test_submit_of_a_hundred_runs_returns_at_once_with_every_task_queued(slurm, tmp_path):
    """The array is queued held (--hold): submit cannot have waited for a task, and none ran."""
    from mlflow.tracking import MlflowClient

    (tmp_path / "hundred.yaml").write_text(
        "name: hundred\nbase: [model=efficientnet]\ngrid:\n  model.phi: {start: 0, stop: 9.9, step: 0.1}\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(uri).search_experiments()  # the store exists, as it does after the first run (migrations: once)
    store = [f"paths.root={tmp_path}/out", f"tracking.uri={uri}"]
    started = time.monotonic()
    done = sweep_cli(slurm, tmp_path, "submit", "hundred.yaml", *store, "--max-parallel", "4", "--sbatch-arg=--hold")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"phiscale-sweep submit of 100 runs: {took:.2f} s")
    assert took < SUBMIT_BOUND_S, f"submit took {took:.1f} s"
    sweep_id = re.search(r"^sweep (\S+): 100 runs", done.stdout, re.M).group(1)
    job = re.search(r"queued SLURM array job (\d+): sbatch --array=0-99%4 ", done.stdout).group(1)
    try:
        info = status_json(slurm, tmp_path, sweep_id)
        assert [r["state"] for r in info["runs"]] == ["pending"] * 100, info["runs"][:3]
        assert {r["slurm_state"] for r in info["runs"]} == {"PENDING"} and info["parent_status"] == "RUNNING"
        assert not list((tmp_path / "out" / "sweeps" / sweep_id / "points").glob("*/slurm-*.out")), "a task ran"
    finally:
        slurm.run("scancel", job, check=False)
