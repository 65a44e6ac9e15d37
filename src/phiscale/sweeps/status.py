"""Where each run of a submitted sweep stands, from MLflow (the child runs) and SLURM (the array tasks).

States: pending (queued), running, finished, pruned (stopped early by its stage's rule, tagged
`phiscale.pruned`: done, never resumed), failed, cancelled, lost (RUNNING in MLflow but its
heartbeat stopped and SLURM knows nothing), missing (no run and no job: never started, or its job
is forgotten). A finished MLflow run is finished whatever SLURM says; otherwise a task SLURM still
knows decides (PENDING -> pending, CANCELLED -> cancelled even while the run still says RUNNING);
otherwise the run's status does. `resume` resubmits the failed, cancelled, lost and missing ones.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from phiscale.sweeps.pruning import PRUNED_TAG
from phiscale.sweeps.record import SWEEP_ID_TAG, RecordPoint, SweepRecord
from phiscale.sweeps.table import columns, num

STATES = ("pending", "running", "finished", "pruned", "failed", "cancelled", "lost", "missing")
DONE = ("finished", "pruned")  # ended as meant: a pruned run is a finished one the rule stopped early
RESUMABLE = ("failed", "cancelled", "lost", "missing")
ACTIVE = ("pending", "running")

# SLURM job state codes (man squeue, "JOB STATE CODES") -> the run's state. COMPLETED is absent: a
# task that exited 0 says nothing about the run, whose MLflow status decides.
SLURM_STATES = {
    "PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending",
    "CONFIGURING": "pending", "RUNNING": "running", "COMPLETING": "running", "SIGNALING": "running",
    "STAGE_OUT": "running", "SUSPENDED": "running", "STOPPED": "running", "RESIZING": "running",
    "CANCELLED": "cancelled", "PREEMPTED": "cancelled", "REVOKED": "cancelled",
    "FAILED": "failed", "TIMEOUT": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed", "SPECIAL_EXIT": "failed",
}  # fmt: skip
# MLflow run status -> the run's state when SLURM says nothing (KILLED: stopped by a signal or reaped).
MLFLOW_STATES = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "cancelled", "SCHEDULED": "pending"}


@dataclass
class PointStatus:
    """One run of the sweep: its record entry, state, MLflow run (latest attempt) and SLURM task state."""

    point: RecordPoint
    state: str
    run: Any | None  # mlflow.entities.Run
    slurm_state: str | None
    restarts: int


def merge_state(run_status: str | None, lost: bool, slurm_state: str | None) -> str:
    """The run's state from its MLflow status (None: no run), heartbeat and SLURM task state (None: unknown)."""
    if run_status == "FINISHED":
        return "finished"
    if slurm_state in SLURM_STATES:
        return SLURM_STATES[slurm_state]
    if slurm_state == "COMPLETED" and run_status in (None, "RUNNING"):
        return "failed" if run_status is None else "lost"  # the process ended; MLflow never heard the end
    if run_status is None:
        return "missing"
    if run_status == "RUNNING":
        return "lost" if lost else "running"
    return MLFLOW_STATES.get(run_status, "failed")


def sweep_status(record: SweepRecord, *, now_s: float | None = None) -> list[PointStatus]:
    """Every run of `record`, in index order, with its state (MLflow and SLURM read once each)."""
    from phiscale.slurm import queue as slurm_queue
    from phiscale.tracking.sync import is_lost

    now_s = time.time() if now_s is None else now_s
    runs = child_runs(record)
    wanted: dict[str, set[int]] = {}
    for point in record.points:
        submission = record.latest_submission(point.index)
        if submission is not None and submission.array_job_id:
            wanted.setdefault(submission.array_job_id, set()).add(point.index)
    tasks = slurm_queue.task_states(wanted) if wanted else {}
    out = []
    for point in record.points:
        run = runs.get(point.index)
        submission = record.latest_submission(point.index)
        slurm_state = tasks.get((submission.array_job_id, point.index)) if submission and submission.array_job_id else None
        status = run.info.status if run is not None else None
        lost = run is not None and is_lost(status, run.data.tags, run.info.start_time, now_s)
        restarts = int(run.data.tags.get("restarts", 0)) if run is not None else 0
        state = merge_state(status, lost, slurm_state)
        if state == "finished" and PRUNED_TAG in run.data.tags:
            state = "pruned"
        out.append(PointStatus(point, state, run, slurm_state, restarts))
    return out


def child_runs(record: SweepRecord) -> dict[int, Any]:
    """The latest MLflow run of each index of the sweep (found by its `phiscale.sweep_id` tag)."""
    from phiscale.tracking.store import client

    mlflow = client(record.tracking_uri)
    experiment = mlflow.get_experiment_by_name(record.experiment)
    if experiment is None:
        return {}
    latest: dict[int, Any] = {}
    for run in _search(mlflow, experiment.experiment_id, f"tags.`{SWEEP_ID_TAG}` = '{record.id}'"):
        try:
            index = int(run.data.tags.get("sweep_index", ""))
        except ValueError:
            continue
        if index not in latest or (run.info.start_time or 0) > (latest[index].info.start_time or 0):
            latest[index] = run
    return latest


def parent_status(states: Sequence[str]) -> str:
    """The parent run's MLflow status: RUNNING while any run is outstanding, FINISHED when all
    finished (or were pruned), else FAILED (something failed, was lost or never ran) or KILLED (only
    cancellations)."""
    if any(s in ACTIVE for s in states):
        return "RUNNING"
    if all(s in DONE for s in states):
        return "FINISHED"
    return "KILLED" if all(s in (*DONE, "cancelled") for s in states) else "FAILED"


def update_parent(record: SweepRecord, statuses: Sequence[PointStatus]) -> str | None:
    """Set the parent run's status from the runs' states; returns it (None without a parent run)."""
    if not record.parent_run_id:
        return None
    from phiscale.tracking.writes import set_run_status

    status = parent_status([s.state for s in statuses])
    set_run_status(record.tracking_uri, record.parent_run_id, status)
    return status


def counts(statuses: Sequence[PointStatus]) -> dict[str, int]:
    """{state: how many}, in STATES order, states with no run left out."""
    found = Counter(s.state for s in statuses)
    return {state: found[state] for state in STATES if found[state]}


def _search(mlflow, experiment_id: str, filter_string: str) -> Iterator[Any]:
    token = None
    while True:
        page = mlflow.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


# ---------------------------------------------------------------- a run's figures -----
TOP1_BEST, TOP1 = "val/top1_best", "val/top1"
IMAGES_PER_S = "perf/images_per_s"


def best_top1(run: Any, client: Any | None = None) -> float | None:
    """`val/top1_best`, else (older runs, given a client) the best value in `val/top1`'s history."""
    metrics = run.data.metrics
    if TOP1_BEST in metrics or TOP1 not in metrics:
        return metrics.get(TOP1_BEST)
    if client is None:
        return metrics[TOP1]
    history = client.get_metric_history(run.info.run_id, TOP1)
    return max((m.value for m in history if not math.isnan(m.value)), default=None)


def last_images_per_s(run: Any) -> float | None:
    """The last logged training throughput (`perf/images_per_s`)."""
    return run.data.metrics.get(IMAGES_PER_S)


# ---------------------------------------------------------------- the table -----
STATUS_HEADER = ["#", "overrides", "state", "restarts", "best val top-1", "images/s"]


def status_rows(statuses) -> list[dict]:
    """One plain dict per run: what the table and --format json show."""
    rows = []
    for s in statuses:
        rows.append({
            "index": s.point.index, "stage": s.point.stage, "overrides": s.point.own, "state": s.state,
            "restarts": s.restarts, "pruned_at": s.run.data.tags.get(PRUNED_TAG) if s.run is not None else None,
            "best_val_top1": best_top1(s.run) if s.run is not None else None,
            "images_per_s": last_images_per_s(s.run) if s.run is not None else None,
            "slurm_state": s.slurm_state, "run_id": s.run.info.run_id if s.run is not None else None,
            "output_dir": s.point.output_dir,
        })  # fmt: skip
    return rows


def format_status(record, rows: list[dict], parent: str | None) -> str:
    staged = bool(record.stages)
    table = [[str(r["index"]), *([r["stage"] or "-"] if staged else []), " ".join(r["overrides"]) or "-",
              r["state"] + (f" at {r['pruned_at']}" if r.get("pruned_at") else ""), str(r["restarts"]),
              num(r["best_val_top1"], "{:.4f}"), num(r["images_per_s"], "{:.1f}")] for r in rows]
    header = [STATUS_HEADER[0], *(["stage"] if staged else []), *STATUS_HEADER[1:]]
    found = Counter(r["state"] for r in rows)
    lines = [f"sweep {record.id} ({record.name}, {len(rows)} runs) from {record.sweep_file}",
             f"MLflow: experiment {record.experiment!r} at {record.tracking_uri}, parent run {record.parent_run_id}"
             + (f" ({parent})" if parent else ""), ""]
    lines += columns(header, table, left=(1, 2, 3) if staged else (1, 2))
    lines += ["", "  ".join(f"{state} {found[state]}" for state in STATES if found[state])]
    lines += study_lines(record)
    return "\n".join(lines)


def study_lines(record) -> list[str]:
    """What the record says about a study: the search's winner (how, from which values), a stop, the epochs."""
    lines = []
    if record.winner:
        w = record.winner
        lines.append(f"search winner: run {w['index']} ({' '.join(w['overrides'])}), {w['metric']}={w['value']:.4f}, "
                     f"run {w['run_id']}; {w['how']}")
    elif record.stages:
        lines.append("search winner: not chosen yet (the scale stage's first run picks it)")
    if record.stopped:
        lines.append(f"study stopped: {record.stopped}")
    if record.epochs and record.stages:  # what early stopping saved (a study's; plain sweeps train every epoch)
        e = record.epochs
        lines.append(f"epochs: {e['spent']} spent of the full grid's {e['full']} ({e['spent'] / max(1, e['full']):.0%})")
    return lines
