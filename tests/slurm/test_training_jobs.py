"""Real training jobs on the local SLURM testbed: slurm/train.sbatch, slurm/sweep.sbatch, requeue.

Each test submits the repository's sbatch script from tmp_path (so the job's working dir, and the
sqlite store's default artifact root ./mlruns, are there), with the runs' output dirs and the MLflow
store in tmp_path too (OUTPUT_ROOT, TRACKING_URI), and reads the runs back with MlflowClient. sbatch
exports this environment to the job, so PHISCALE_CACHE (tests/conftest.py) reaches every task and
FFCV's numba cache is reused.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(Path(sys.executable).with_name("phiscale-train"))
# Tiny CPU runs on the embedded digits (32 px, 10 classes): a tiny model, a few short epochs.
TINY = [
    "model=mobilenet_v3_small",
    "model.width_mult=0.5",
    "trainer.progress_bar=false",
    "data.batch_size=32",
    "data.num_workers=1",
    "optim=sgd_cosine",
]


def job_env(tmp_path: Path, experiment: str) -> dict[str, str]:
    """What the sbatch scripts read from the environment: the app, output root, MLflow store."""
    return {
        "PHISCALE_TRAIN": TRAIN,
        "OUTPUT_ROOT": str(tmp_path / "runs"),
        "TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "EXPERIMENT": experiment,
    }


def mlflow_runs(tmp_path: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {tmp_path}/mlflow.db"
    return client, client.search_runs([found.experiment_id])


def output_of(slurm, job: str) -> str:
    return "\n".join(f.read_text(errors="replace") for f in slurm.output_files(job))


def test_two_node_ddp_job_logs_one_run_with_world_size_two(slurm, tmp_path):
    """sbatch slurm/train.sbatch, 2 nodes x 1 task, gloo DDP: one FINISHED run, world_size=2, val metrics."""
    args = [*TINY, "trainer=multinode", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
            "trainer.log_every_n_steps=2"]  # fmt: skip
    started = time.monotonic()
    job = slurm.sbatch(
        ROOT / "slurm" / "train.sbatch", "--nodes=2", "--ntasks-per-node=1", "--time=5",
        f"--output={tmp_path}/slurm-%j.out",
        cwd=tmp_path, env=job_env(tmp_path, "ddp2"), script_args=args,
    )  # fmt: skip
    (record,) = slurm.wait(job, timeout=240)
    print(f"2-node DDP job {job}: {time.monotonic() - started:.0f}s from submit to end")
    out = output_of(slurm, job)
    assert record["JobState"] == "COMPLETED", f"job {job} ended {record['JobState']}:\n{out[-3000:]}"
    assert "Starting with 2 processes" in out, f"DDP did not start 2 processes:\n{out[-3000:]}"

    client, runs = mlflow_runs(tmp_path, "ddp2")
    assert len(runs) == 1, f"expected one MLflow run for the 2-rank job, got {len(runs)} (did rank 1 log?)"
    (run,) = runs
    assert run.info.status == "FINISHED", run.info.status
    assert run.data.tags.get("world_size") == "2", run.data.tags
    assert run.data.tags.get("slurm_job_id") == job, run.data.tags
    for key in ("val/top1", "val/top5", "val/loss", "train/loss"):
        assert key in run.data.metrics, f"{key} missing; logged: {sorted(run.data.metrics)}"
    val = client.get_metric_history(run.info.run_id, "val/top1")
    assert len(val) == 1, (
        f"one validation (one epoch of 4 steps) expected: {[(m.step, m.value) for m in val]}"
    )


def test_sweep_array_trains_one_run_per_phi(slurm, tmp_path):
    """sbatch --array=0-2 slurm/sweep.sbatch over φ = 0, 0.5, 1: 3 FINISHED runs, one experiment."""
    sweep = tmp_path / "tiny_phi.yaml"
    sweep.write_text("name: tiny_phi\nbase: [model=efficientnet]\ngrid:\n  model.phi: [0, 0.5, 1]\n")
    args = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
            "trainer.log_every_n_steps=1", "trainer.progress_bar=false", "train_resolution=32",
            "data.batch_size=16", "data.num_workers=1"]  # fmt: skip
    started = time.monotonic()
    job = slurm.sbatch(
        ROOT / "slurm" / "sweep.sbatch", "--array=0-2", "--time=5", f"--output={tmp_path}/slurm-%A_%a.out",
        cwd=tmp_path, env=job_env(tmp_path, "sweep3"), script_args=[str(sweep), *args],
    )  # fmt: skip
    records = slurm.wait(job, timeout=300)
    print(f"sweep array {job}: {time.monotonic() - started:.0f}s from submit to the last task's end")
    states = {r.get("JobId"): r.get("JobState") for r in records}
    assert len(records) == 3 and set(states.values()) == {"COMPLETED"}, (
        f"expected 3 COMPLETED array tasks, got {states}\n{output_of(slurm, job)[-4000:]}"
    )

    _, runs = mlflow_runs(tmp_path, "sweep3")
    summary = sorted(
        (r.data.tags.get("phi"), r.info.status, r.data.tags.get("sweep"), r.info.run_name) for r in runs
    )
    assert len(runs) == 3, f"expected 3 runs in one experiment, got {summary}"
    assert {r.data.tags.get("phi") for r in runs} == {"0", "0.5", "1"}, summary
    assert all(r.info.status == "FINISHED" for r in runs), summary
    assert all(r.data.tags.get("sweep") == "tiny_phi" for r in runs), summary
    assert {r.data.tags.get("slurm_array_job_id") for r in runs} == {job}, summary
    assert {r.data.tags.get("slurm_array_task_id") for r in runs} == {"0", "1", "2"}, summary
    assert all("val/top1" in r.data.metrics for r in runs), summary


# The requeue test's clock (measured on the testbed, 2 shared cores): slurmctld checks time limits
# every ~30 s and sends --signal=...@N up to ~30 s early, so with --time=2 and @45, USR1 comes
# 45-75 s after the start (earlier would risk landing before the app has installed its handler,
# ~15-30 s in). Training then needs > 60 s at full speed (~0.23 s per step, 2 ranks of one thread
# each): 16 epochs of 22 steps, ~90 s. Other load on the host slows steps, hence generous bounds.
REQUEUE_TIME_MIN, REQUEUE_SIGNAL_S = 2, 45
EPOCHS, STEPS_PER_EPOCH = 16, 22  # digits: 1438 train images / (32 per rank x 2 ranks), last batch kept


def test_time_limit_signal_requeues_and_resumes_into_one_run(slurm, tmp_path):
    """--time=2 --signal=B:USR1@45: USR1 mid-training -> last.ckpt, requeue, resume -> ONE run, no step twice."""
    args = [*TINY, "trainer=multinode", f"trainer.max_epochs={EPOCHS}", "trainer.log_every_n_steps=1",
            "trainer.ckpt_every_n_steps=1000"]  # fmt: skip
    submitted = time.monotonic()
    job = slurm.sbatch(
        ROOT / "slurm" / "train.sbatch", "--nodes=2", "--ntasks-per-node=1", f"--time={REQUEUE_TIME_MIN}",
        f"--signal=B:USR1@{REQUEUE_SIGNAL_S}", f"--output={tmp_path}/slurm-%j.out",
        cwd=tmp_path, env=job_env(tmp_path, "requeue"), script_args=args,
    )  # fmt: skip

    # The requeued run gets the same warning signal 45-75 s after its own start; give it the time to
    # finish instead (on a real cluster each run of a long job is far longer than the signal margin).
    deadline = time.monotonic() + 240
    record: dict[str, str] = {}
    while time.monotonic() < deadline:
        record = (slurm.records(job) or [{}])[0]
        if record.get("Restarts") == "1" or record.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"):
            break
        time.sleep(1)
    requeued_at = time.monotonic()
    assert record.get("Restarts") == "1", (
        f"job {job} was not requeued by its time-limit signal (state {record.get('JobState')}, "
        f"Restarts={record.get('Restarts')}):\n{output_of(slurm, job)[-4000:]}"
    )
    slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=10")

    (record,) = slurm.wait(job, timeout=480)
    finished = time.monotonic()
    out = output_of(slurm, job)
    assert record["JobState"] == "COMPLETED", f"job {job} ended {record['JobState']}:\n{out[-4000:]}"
    assert record.get("Restarts") == "1", f"expected exactly one requeue, Restarts={record.get('Restarts')}"
    received = re.findall(r"received SIGUSR1 at step (\d+)", out)
    assert received, f"the run never reported USR1:\n{out[-4000:]}"
    assert "requeued SLURM job" in out, f"no `scontrol requeue` after USR1:\n{out[-4000:]}"
    assert re.search(r"resuming MLflow run \w+ from \S+last\.ckpt \(restart 1\)", out), (
        f"the requeued job did not resume from last.ckpt:\n{out[-4000:]}"
    )

    client, runs = mlflow_runs(tmp_path, "requeue")
    assert len(runs) == 1, f"the requeued job made {len(runs)} MLflow runs, expected one"
    (run,) = runs
    assert run.info.status == "FINISHED", run.info.status
    assert run.data.tags.get("restarts") == "1", run.data.tags
    assert run.data.tags.get("slurm_restart_count") in (None, "1"), run.data.tags
    assert run.data.metrics.get("run/restarts") == 1.0, run.data.metrics.get("run/restarts")
    signal_step = int(received[0])
    for key in ("train/loss", "val/top1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == sorted(set(steps)), f"{key} has duplicated or out-of-order steps: {steps}"
    loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert loss_steps[0] < signal_step < loss_steps[-1], (
        f"USR1 at step {signal_step} was not mid-training (train/loss steps {loss_steps[0]}..{loss_steps[-1]})"
    )
    last_step = EPOCHS * STEPS_PER_EPOCH - 1
    assert loss_steps[-1] == last_step, f"the resumed run stopped at step {loss_steps[-1]}, not {last_step}"
    missing = sorted(set(range(last_step + 1)) - set(loss_steps))
    assert not missing, f"train/loss (logged every step) lacks steps {missing} around the restart"
    # Every epoch end validated once (Lightning also validates the part-epoch it stops in on USR1).
    val_steps = {m.step for m in client.get_metric_history(run.info.run_id, "val/top1")}
    epoch_ends = set(range(STEPS_PER_EPOCH - 1, last_step + 1, STEPS_PER_EPOCH))
    assert epoch_ends <= val_steps, f"epoch ends without val/top1: {sorted(epoch_ends - val_steps)}"

    # Timings from the log: the sbatch script prints its start, Lightning's log lines carry a time.
    starts = [
        _clock(t) for t in re.findall(r"^phiscale: job \d+ \(restart \d\) .*; started (\S+ \S+)$", out, re.M)
    ]
    usr1 = [_clock(t) for t in re.findall(r"^\[(\S+ [\d:]+),\d+\]\S* phiscale: received SIGUSR1", out, re.M)]
    timing = (
        f"submit -> requeued {requeued_at - submitted:.0f}s, requeued -> end {finished - requeued_at:.0f}s"
    )
    if len(starts) == 2 and usr1:
        timing = (
            f"run 1 started, USR1 {usr1[0] - starts[0]:.0f}s later at step {signal_step} "
            f"(limit {REQUEUE_TIME_MIN * 60}s, @{REQUEUE_SIGNAL_S}), run 2 started {starts[1] - usr1[0]:.0f}s after USR1; "
            + timing
        )
    print(f"requeue job {job}: {timing}; total {finished - submitted:.0f}s")


def _clock(stamp: str) -> float:
    """'2026-11-28 05:01:16' -> seconds since the epoch (the job's local time)."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
