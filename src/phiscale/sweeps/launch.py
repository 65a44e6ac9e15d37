"""Launching a recorded sweep: one SLURM array (`submit`, `resume`), or one run after another here (`--local`).

Every launch trains `phiscale-train sweep.record=<sweep.json> sweep.index=<i>`: the record pins
each run's overrides, output dir, store and experiment, so a resubmitted run continues where it
stopped (its last.ckpt, its MLflow run). A SLURM launch returns as soon as sbatch has queued the
array; its log files go to the runs' output dirs (`<dir>/slurm-<array job>_<i>.out`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phiscale.errors import PhiscaleError
from phiscale.sweeps.record import (
    Submission,
    SweepRecord,
    add_submission,
    create_record,
    format_indices,
    now_iso,
    open_parent_run,
    quote_value,
)
from phiscale.sweeps.study import load_study, stage_record

REPO_SCRIPT = Path(__file__).resolve().parents[3] / "slurm" / "sweep.sbatch"
LOCAL_LOG = "train.log"  # a local run's console output, in its output dir


@dataclass(frozen=True)
class SweepSettings:
    """What the whole sweep shares, from the train config composed with the sweep's base and the extra overrides."""

    root: Path  # paths.root
    tracking_uri: str
    experiment: str


def settings_of(cfg: Any) -> SweepSettings:
    """paths.root, tracking.uri (made absolute) and tracking.experiment of a composed train config."""
    from phiscale.tracking.store import normalize_tracking_uri

    return SweepSettings(Path(str(cfg.paths.root)).resolve(), normalize_tracking_uri(str(cfg.tracking.uri)),
                         str(cfg.tracking.experiment))


def new_sweep(sweep_file: str | Path, extra: Sequence[str], *, submit_command: str) -> SweepRecord:
    """Load the sweep file (one stage, or a study's two), write its record (one output dir per run) and
    open its parent MLflow run."""
    from phiscale.config import compose_config
    from phiscale.tracking.store import check_reachable

    study = load_study(sweep_file)
    settings = settings_of(compose_config([*study.stages[0].sweep.base, *extra]))  # as the runs will compose it
    check_reachable(settings.tracking_uri)  # a wrong server URI fails here, in seconds, before anything is queued
    record = create_record(study, root=settings.root, extra=extra, submit_command=submit_command,
                           tracking_uri=settings.tracking_uri, experiment=settings.experiment)
    stage_record(record, study)
    open_parent_run(record)
    return record


def sbatch_args(record: SweepRecord, indices: Sequence[int], *, max_parallel: int | None = None,
                extra_args: Sequence[str] = (), script: str | Path | None = None,
                after: str | None = None) -> list[str]:
    """sbatch's arguments for one array over `indices` (job name and log files default to the sweep's)."""
    if max_parallel is not None and max_parallel < 1:
        raise PhiscaleError(f"--max-parallel {max_parallel} must be at least 1 (or left out for no limit)")
    script = Path(script) if script is not None else REPO_SCRIPT
    if not script.is_file():
        raise PhiscaleError(f"SLURM script {script} not found: pass --script path/to/sweep.sbatch")
    array = format_indices(indices) + (f"%{max_parallel}" if max_parallel else "")
    ours = [f"--array={array}"] + ([f"--dependency=afterany:{after}"] if after else [])
    if not _given(extra_args, "--job-name", "-J"):
        ours.append(f"--job-name={record.id}")
    if not _given(extra_args, "--output", "-o"):
        ours.append(f"--output={record.directory}/points/%a/slurm-%A_%a.out")
    return [*ours, *extra_args, str(script), f"sweep.record={quote_value(str(record.path))}"]


def submit_slurm(record: SweepRecord, indices: Sequence[int], **kwargs) -> Submission:
    """Queue `indices` as one SLURM array and record the submission; returns without waiting."""
    from phiscale.slurm import queue as slurm_queue

    args = sbatch_args(record, indices, **kwargs)
    job_id = slurm_queue.submit(args)
    submission = Submission("slurm", sorted(indices), shlex.join(["sbatch", *args]), now_iso(), job_id)
    add_submission(record, submission)
    return submission


def train_command(record: SweepRecord, index: int) -> list[str]:
    """The process that trains run `index` here (what a SLURM task runs, without srun)."""
    point_dir = Path(record.point(index).output_dir)
    return [sys.executable, "-m", "phiscale.cli.train", f"sweep.record={quote_value(str(record.path))}",
            f"sweep.index={index}", f"hydra.run.dir={quote_value(str(point_dir / 'hydra'))}"]


def run_local(record: SweepRecord, indices: Sequence[int], *, echo: Callable[[str], None] = print,
              parallel: int = 1) -> dict[int, int]:
    """Train `indices` on this machine, each its own process, `parallel` at a time in index order (a
    failure does not stop the others); returns {index: exit code}. With several at once each process
    gets its share of the CPUs (OMP_NUM_THREADS, which phiscale-train sizes its threads from). Ctrl-C
    stops the running ones (they checkpoint) and starts no more."""
    command = shlex.join(["phiscale-train", f"sweep.record={quote_value(str(record.path))}"]) + " sweep.index=<i>"
    add_submission(record, Submission("local", sorted(indices), command, now_iso()))
    env = dict(os.environ)
    if parallel > 1:
        env["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // parallel))
    codes: dict[int, int] = {}
    pending = list(enumerate(indices, 1))
    running: dict[int, tuple[subprocess.Popen, float, Path, Any]] = {}
    try:
        while pending or running:
            while pending and len(running) < parallel:
                n, index = pending.pop(0)
                log = Path(record.point(index).output_dir) / LOCAL_LOG
                echo(f"run {index} ({n}/{len(indices)}): {' '.join(record.point(index).own) or '(base)'} -> log {log}")
                out = open(log, "a")  # noqa: SIM115 (closed when the run ends)
                process = subprocess.Popen(train_command(record, index), stdout=out, stderr=subprocess.STDOUT, env=env)
                running[index] = (process, time.monotonic(), log, out)
            index = _wait_any(running)
            process, started, log, out = running.pop(index)
            out.close()
            codes[index] = process.returncode
            verdict = "ok" if codes[index] == 0 else f"FAILED (exit code {codes[index]}; see {log})"
            echo(f"run {index}: {verdict} after {time.monotonic() - started:.0f} s")
    except KeyboardInterrupt:
        for index, (process, _, _, out) in running.items():
            codes[index] = process.wait()  # it got the same SIGINT: let it checkpoint and close its run
            out.close()
        echo(f"run {', '.join(map(str, running))}: interrupted; the rest not started "
             f"(`phiscale-sweep resume {record.id} --local`)")
    return codes


def _wait_any(running: dict[int, tuple[subprocess.Popen, float, Path, Any]]) -> int:
    """The index of a run that has ended, the first in index order; blocks until one has."""
    while True:
        for index, (process, *_) in running.items():
            if process.poll() is not None:
                return index
        if len(running) == 1:
            next(iter(running.values()))[0].wait()
        else:
            time.sleep(0.2)


@dataclass
class Launched:
    """What one launch did: a SLURM submission, or (local) each run's exit code and the sweep after them."""

    submission: Submission | None = None  # SLURM: the first array (a study's search)
    submissions: list[Submission] | None = None  # SLURM: one array per stage
    closer: str | None = None  # SLURM: the job that closes the parent after them
    codes: dict[int, int] | None = None
    counts: dict[str, int] | None = None  # local: {state: how many} over the whole sweep
    parent: str | None = None  # local: the parent run's status after the runs

    @property
    def failed(self) -> list[int]:
        return sorted(i for i, code in (self.codes or {}).items() if code != 0)


def launch(record: SweepRecord, indices: Sequence[int], *, local: bool, max_parallel: int | None = None,
           extra_args: Sequence[str] = (), script: str | Path | None = None) -> Launched:
    """Train `indices` here one after another, stage by stage (then set the parent from every run's state),
    or queue them as one SLURM array per stage, each stage after the one before it (`--dependency=afterany`),
    and the closer after all (sweeps/close.py), and return at once."""
    groups = [g for g in (sorted(set(indices) & set(record.stage_indices(s["name"]))) for s in record.stages) if g]
    groups = groups or [list(indices)]
    if not local:
        submissions, after = [], None
        for group in groups:
            submissions.append(submit_slurm(record, group, max_parallel=max_parallel, extra_args=extra_args,
                                            script=script, after=after))
            after = submissions[-1].array_job_id
        from phiscale.sweeps.close import submit_closer

        closer = submit_closer(record, [s.array_job_id for s in submissions], extra_args)
        return Launched(submission=submissions[0], submissions=submissions, closer=closer)
    from phiscale.sweeps.close import close_sweep
    from phiscale.sweeps.status import counts, sweep_status

    codes: dict[int, int] = {}
    for group in groups:
        done = run_local(record, group, parallel=max_parallel or 1)
        codes |= done
        if len(done) < len(group):
            break  # interrupted: the later stages wait for `resume`
    parent, _ = close_sweep(record)
    return Launched(codes=codes, counts=counts(sweep_status(record)), parent=parent)


def resume_indices(record: SweepRecord, statuses: Sequence[Any]) -> list[int]:
    """The runs `resume` relaunches: the failed, cancelled, lost and missing ones, except a search's once
    its winner is recorded (a scale stage always trains the winner it was given). Clears a stop to retry."""
    from phiscale.sweeps.status import RESUMABLE

    searched = record.winner is not None
    todo = [s.point.index for s in statuses if s.state in RESUMABLE and not (searched and s.point.stage == "search")]
    if record.stopped and not any(record.point(i).stage == "search" for i in todo):
        return []  # stopped after a search with nothing left to run: its scale stage has no winner to train
    if record.stopped and any(record.point(i).stage == "search" for i in todo):
        from phiscale.sweeps.record import locked

        with locked(record) as fresh:
            fresh.stopped = record.stopped = None  # the search runs again: its winner is picked afresh
            fresh.save()
    return todo


def _given(args: Sequence[str], *flags: str) -> bool:
    """An sbatch option among `args`, as `--flag=v`, `--flag v`, `-J v` or `-Jv`."""
    return any(a == f or a.startswith(f + "=") or (len(f) == 2 and a.startswith(f)) for a in args for f in flags)
