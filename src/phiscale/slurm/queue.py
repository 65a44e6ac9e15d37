"""SLURM from the outside: submit an array with sbatch, and read the state of its tasks.

A task's state comes from `scontrol show job` while the controller still knows the job (pending,
running, and for MinJobAge seconds after the end), then from accounting (`sacct`) where there is
a database, else from the job completion log of `JobCompType=jobcomp/filetxt` (one line per ended
task, the last one wins: a requeue writes one too). Reading fails soft: without SLURM, or for a
job it no longer knows, the answer is simply "unknown" and callers go by MLflow alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from phiscale.errors import PhiscaleError

TIMEOUT_S = 15  # one SLURM command; a healthy controller answers in milliseconds
_FIELDS = re.compile(r"(\w+)=(\S*)")


def submit(args: Sequence[str], *, cwd: str | Path | None = None) -> str:
    """Run `sbatch --parsable <args>`; returns the job id, or raises with sbatch's own message."""
    if shutil.which("sbatch") is None:
        raise PhiscaleError("sbatch not found: submit from a SLURM login node, or run the points here with --local")
    try:
        done = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise PhiscaleError(f"sbatch did not answer within {TIMEOUT_S} s: is slurmctld up? (`sinfo`)") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit code {done.returncode}"
        raise PhiscaleError(f"sbatch refused the sweep: {message}")
    return done.stdout.strip().split(";")[0]


def expand_task_ids(spec: str) -> list[int]:
    """scontrol's ArrayTaskId of a pending remainder, '2-5,9%2' or '0-8:4', -> [2, 3, 4, 5, 9]."""
    out: list[int] = []
    for part in spec.split("%")[0].split(","):
        if not part:
            continue
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        out.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return out


def parse_records(text: str) -> list[dict[str, str]]:
    """`Key=Value ...` lines (scontrol -o, the jobcomp log) -> one dict per line."""
    return [dict(_FIELDS.findall(line)) for line in text.splitlines() if line.strip()]


def task_states(wanted: Mapping[str, Iterable[int]]) -> dict[tuple[str, int], str]:
    """{(array job id, task index): SLURM state} for the `wanted` tasks of each array job that SLURM
    can still say anything about (a task it has forgotten is left out)."""
    wanted = {str(job): set(tasks) for job, tasks in wanted.items()}
    states: dict[tuple[str, int], str] = {}
    if not wanted or shutil.which("scontrol") is None:
        return states
    try:
        for job in wanted:
            states.update(_from_records(parse_records(_run("scontrol", "show", "job", "-o", job)), job))
        missing = sorted({job for job, tasks in wanted.items() for t in tasks if (job, t) not in states})
        if missing:
            later = _from_sacct(missing) or _from_jobcomp(missing)
            states.update({key: state for key, state in later.items() if key not in states})
    except _Unreachable:
        pass  # what was read so far; the rest is unknown
    return {key: state for key, state in states.items() if key[1] in wanted[key[0]]}


def _from_records(records: list[dict[str, str]], job: str) -> dict[tuple[str, int], str]:
    out = {}
    for record in records:
        if record.get("ArrayJobId") != job or "JobState" not in record or "ArrayTaskId" not in record:
            continue
        for task in expand_task_ids(record["ArrayTaskId"]):
            out[(job, task)] = record["JobState"]
    return out


def _from_sacct(jobs: list[str]) -> dict[tuple[str, int], str]:
    """Accounting's view (`sacct -X`), where the cluster keeps one; {} where it has none."""
    if shutil.which("sacct") is None:
        return {}
    out = {}
    for line in _run("sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(jobs)).splitlines():
        job_task, _, state = line.partition("|")
        job, _, task = job_task.partition("_")
        if job in jobs and task:
            for index in expand_task_ids(task.strip("[]")):
                out[(job, index)] = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0"
    return out


def _from_jobcomp(jobs: list[str]) -> dict[tuple[str, int], str]:
    """The job completion log of jobcomp/filetxt (the path is in `scontrol show config`)."""
    config = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", _run("scontrol", "show", "config"), re.M))
    if config.get("JobCompType") != "jobcomp/filetxt" or not config.get("JobCompLoc"):
        return {}
    try:
        text = Path(config["JobCompLoc"]).read_text(errors="replace")
    except OSError:
        return {}
    out = {}
    for record in parse_records(text):  # in time order: a later line for the same task wins
        job, task = record.get("ArrayJobId"), record.get("ArrayTaskId")
        if job in jobs and task and task.isdigit() and "JobState" in record:
            out[(job, int(task))] = record["JobState"]
    return out


class _Unreachable(Exception):
    """A SLURM command hung: ask it nothing more this time."""


def _run(*cmd: str) -> str:
    """A SLURM query's stdout; '' when it fails (unknown job, no configuration): callers fall back."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _Unreachable(cmd[0]) from None
    except OSError:
        return ""
    return done.stdout if done.returncode == 0 else ""
