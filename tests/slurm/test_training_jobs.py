"""Real training jobs on the local SLURM testbed: slurm/train.sbatch, slurm/sweep.sbatch, requeue.

Each test submits the repository's sbatch script from tmp_path (so the job's working dir, and the
sqlite store's default artifact root ./mlruns, are there), with the runs' output dirs and the MLflow
store in tmp_path too (OUTPUT_ROOT, TRACKING_URI), and reads the runs back with MlflowClient. sbatch
exports this environment to the job, so PHISCALE_CACHE (tests/conftest.py) reaches every task and
FFCV's numba cache is reused.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from support.runs import NO_MODEL, TRAIN, wait_for

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
# Tiny CPU runs on the embedded digits (32 px, 10 classes): a tiny model, a few short epochs.
TINY = [
    "model=mobilenet_v3_small",
    "model.width_mult=0.5",
    "trainer.progress_bar=false",
    "data.batch_size=32",
    "data.num_workers=1",
    "optim=sgd_cosine",
    NO_MODEL,
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
            "data.batch_size=16", "data.num_workers=1", NO_MODEL]  # fmt: skip
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


# The requeue test drives SLURM's own time-limit warning (--signal=B:USR1@N) without depending on how
# fast the machine trains: the first run has a step budget far beyond any time limit here; once it
# has written a checkpoint (so its signal handlers are in place) the test lowers the job's time limit
# with `scontrol update` so that the warning falls due (slurmctld sends it at its next time-limit
# check, within ~90 s); the app saves last.ckpt and requeues itself, and the test gives the job its
# long limit back as soon as it sees the app take the warning. The requeued run is ended by a
# means the test controls: the job script reads its extra overrides from a file the test writes once
# it has seen USR1 (a smaller trainer.max_epochs: the end of the epoch after the one USR1 hit).
# Every wait is on an event (a file, a line of the job's output, the job's state) and ends at once
# when the job ended without it; the timeouts only bound a hang, so a busy machine (another training
# beside this one) makes the test slower, never wrong.
SIGNAL_S = 300  # the warning margin: the app has this long to take the warning before the limit kills it
EVENT_TIMEOUT_S = 1800  # a hang, not a slow machine
HUGE_EPOCHS = 1000
STEPS_PER_EPOCH = 22  # digits: 1438 train images, 32 per rank x 2 ranks, last partial batch dropped


def requeue_wrapper(restart_args: Path) -> str:
    """A batch script that runs slurm/train.sbatch itself; on a restart it first waits for the
    test's overrides in `restart_args`, then appends them (exec: USR1 still reaches srun)."""
    return f"""#!/bin/bash
extra=()
if [ "${{SLURM_RESTART_COUNT:-0}}" -gt 0 ]; then
  while [ ! -s {restart_args} ]; do sleep 0.2; done
  read -ra extra < {restart_args}
fi
exec bash {ROOT / "slurm" / "train.sbatch"} "$@" "${{extra[@]}}"
"""


def until_job_ends(slurm, job: str, event, what: str):
    """`event` as a predicate for wait_for that fails the test at once when `job` has ended (or been
    requeued: PENDING again) before `event` happened; the job's state is asked every 2 s at most."""
    asked = [0.0]

    def check():
        value = event()
        if value or time.monotonic() - asked[0] < 2:
            return value
        asked[0] = time.monotonic()
        state = (slurm.records(job) or [{}])[0].get("JobState")
        if state not in ("RUNNING", "CONFIGURING", "COMPLETING", None) and not event():
            pytest.fail(f"job {job} is {state} before: {what}\n{output_of(slurm, job)[-4000:]}\n{slurm.log_tails()}")
        return event()

    return check


def _seconds(clock: str) -> int:
    """scontrol's RunTime `[D-]HH:MM:SS` -> seconds."""
    days, _, hms = clock.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def test_time_limit_signal_requeues_and_resumes_into_one_run(slurm, tmp_path):
    """The time-limit warning USR1 mid-training -> last.ckpt, requeue, resume -> ONE run, no step twice."""
    args = [*TINY, "trainer=multinode", f"trainer.max_epochs={HUGE_EPOCHS}", "trainer.log_every_n_steps=1",
            "trainer.ckpt_every_n_steps=5"]  # fmt: skip
    restart_args = tmp_path / "restart-args"
    submitted = time.monotonic()
    job = slurm.sbatch(
        requeue_wrapper(restart_args), "--nodes=2", "--ntasks-per-node=1", "--time=30",
        f"--signal=B:USR1@{SIGNAL_S}", "--requeue", "--open-mode=append", f"--output={tmp_path}/slurm-%j.out",
        cwd=tmp_path, env=job_env(tmp_path, "requeue"), script_args=args,
    )  # fmt: skip
    ckpt = tmp_path / "runs" / job / "checkpoints" / "last.ckpt"
    wait_for(lambda: (slurm.records(job) or [{}])[0].get("JobState") not in ("PENDING", None), EVENT_TIMEOUT_S,
             f"job {job} never started (the testbed's nodes busy?)", details=slurm.log_tails)
    wait_for(until_job_ends(slurm, job, ckpt.exists, f"writing {ckpt}"), EVENT_TIMEOUT_S, f"job {job} wrote no {ckpt}",
             details=lambda: output_of(slurm, job)[-4000:] + slurm.log_tails())

    # Bring the warning in: a limit SIGNAL_S..SIGNAL_S+60 s past the job's current run time.
    run_time = _seconds(slurm.records(job)[0]["RunTime"])
    limit_min = -(-(run_time + SIGNAL_S) // 60)
    slurm.run("scontrol", "update", f"JobId={job}", f"TimeLimit={limit_min}")
    signalled_at = time.monotonic()
    found = wait_for(
        until_job_ends(slurm, job, lambda: re.search(r"received SIGUSR1 at step (\d+)", output_of(slurm, job)),
                       "the app took the time-limit USR1"),
        EVENT_TIMEOUT_S, f"job {job} got no time-limit USR1 after TimeLimit={limit_min} (run time {run_time}s)",
        details=lambda: output_of(slurm, job)[-4000:] + slurm.log_tails(),
    )  # fmt: skip
    signal_step, usr1_after = int(found.group(1)), time.monotonic() - signalled_at
    # The requeued run: a time limit it never reaches, and an end the test chooses.
    slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=30")
    end_epochs = signal_step // STEPS_PER_EPOCH + 2
    restart_args.write_text(f"trainer.max_epochs={end_epochs}\n")

    (record,) = slurm.wait(job, timeout=EVENT_TIMEOUT_S)
    finished = time.monotonic()
    out = output_of(slurm, job)
    assert record["JobState"] == "COMPLETED", f"job {job} ended {record['JobState']}:\n{out[-4000:]}"
    assert record.get("Restarts") == "1", f"expected exactly one requeue, Restarts={record.get('Restarts')}"
    assert "requeued SLURM job" in out, f"no `scontrol requeue` after USR1:\n{out[-4000:]}"
    assert re.search(r"resuming \w+ from \S+last\.ckpt \(restart 1\)", out), (
        f"the requeued job did not resume from last.ckpt:\n{out[-4000:]}"
    )

    client, runs = mlflow_runs(tmp_path, "requeue")
    assert len(runs) == 1, f"the requeued job made {len(runs)} MLflow runs, expected one"
    (run,) = runs
    assert run.info.status == "FINISHED", run.info.status
    assert run.data.tags.get("restarts") == "1", run.data.tags
    assert run.data.tags.get("slurm_restart_count") in (None, "1"), run.data.tags
    assert run.data.metrics.get("run/restarts") == 1.0, run.data.metrics.get("run/restarts")
    assert "trainer.max_epochs" in run.data.tags.get("changed_on_resume", ""), run.data.tags
    for key in ("train/loss", "val/top1"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == sorted(set(steps)), f"{key} has duplicated or out-of-order steps: {steps}"
    loss_steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert loss_steps[0] < signal_step < loss_steps[-1], (
        f"USR1 at step {signal_step} was not mid-training (train/loss steps {loss_steps[0]}..{loss_steps[-1]})"
    )
    last_step = end_epochs * STEPS_PER_EPOCH - 1
    assert loss_steps[-1] == last_step, f"the resumed run stopped at step {loss_steps[-1]}, not {last_step}"
    missing = sorted(set(range(last_step + 1)) - set(loss_steps))
    assert not missing, f"train/loss (logged every step) lacks steps {missing} around the restart"
    val_steps = {m.step for m in client.get_metric_history(run.info.run_id, "val/top1")}
    epoch_ends = set(range(STEPS_PER_EPOCH - 1, last_step + 1, STEPS_PER_EPOCH))
    assert epoch_ends <= val_steps, f"epoch ends without val/top1: {sorted(epoch_ends - val_steps)}"
    print(
        f"requeue job {job}: USR1 at step {signal_step}, {usr1_after:.0f}s after "
        f"TimeLimit={limit_min} (run time {run_time}s); resumed to epoch {end_epochs}; "
        f"total {finished - submitted:.0f}s"
    )
