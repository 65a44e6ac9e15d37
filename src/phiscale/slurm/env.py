"""The SLURM job this process runs in, read from its environment, and a layout check at start.

Lightning's SLURMEnvironment sets ranks and world size from the same variables; this module only
reads what phiscale tags runs with and refuses, before any work, a layout that cannot train
(SLURM would start a number of processes that Lightning does not expect, and they would hang).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from phiscale.errors import PhiscaleError

# Lightning's SLURMEnvironment.detect() ignores allocations whose job name is one of these
# (`salloc` / `srun --pty bash`): the user runs processes by hand there, not one per task.
INTERACTIVE_JOB_NAMES = ("bash", "interactive")


@dataclass(frozen=True)
class SlurmEnv:
    """What SLURM tells a task about its job (see `man sbatch`, OUTPUT ENVIRONMENT VARIABLES)."""

    job_id: str
    job_name: str | None
    array_job_id: str | None  # SLURM_ARRAY_JOB_ID: the array's id, shared by all its tasks
    array_task_id: int | None  # SLURM_ARRAY_TASK_ID: this task's index in the array
    restart_count: int  # SLURM_RESTART_COUNT: times this job was requeued (0 on its first run)
    nnodes: int  # SLURM_NNODES (SLURM_JOB_NUM_NODES)
    ntasks: int | None  # SLURM_NTASKS
    ntasks_per_node: int | None  # tasks on every node; None when uneven or unknown
    procid: int  # SLURM_PROCID: global rank of this task
    localid: int  # SLURM_LOCALID: rank of this task on its node
    nodeid: int  # SLURM_NODEID
    node_list: str | None  # SLURM_JOB_NODELIST, e.g. "n[1-2]"
    cpus_per_task: int | None = None  # SLURM_CPUS_PER_TASK: set only with --cpus-per-task

    @property
    def interactive(self) -> bool:
        return self.job_name in INTERACTIVE_JOB_NAMES

    @property
    def run_key(self) -> str:
        """One id per run that survives requeues: `<array job>_<task>` for arrays, else the job id."""
        if self.array_job_id is not None and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id


def _int(env: Mapping[str, str], *names: str, default: int | None = None) -> int | None:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise PhiscaleError(
                    f"{name}={value!r} is not an integer; is this really a SLURM job?"
                ) from None
    return default


def tasks_per_node(spec: str) -> list[int]:
    """Expand SLURM's compressed per-node counts: "2(x3),1" -> [2, 2, 2, 1]."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            raise PhiscaleError(f"cannot parse SLURM tasks-per-node {spec!r}; expected e.g. '2(x3),1'")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts


def _ntasks_per_node(env: Mapping[str, str]) -> int | None:
    explicit = _int(env, "SLURM_NTASKS_PER_NODE")
    if explicit is not None:
        return explicit
    # Inside an srun step the step's layout is what started us; in the batch script, the job's.
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not spec:
        return None
    counts = set(tasks_per_node(spec))
    return counts.pop() if len(counts) == 1 else None


def slurm_env(environ: Mapping[str, str] | None = None) -> SlurmEnv | None:
    """This process's SLURM job, or None outside SLURM (no SLURM_JOB_ID)."""
    env = os.environ if environ is None else environ
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        return None
    return SlurmEnv(
        job_id=job_id,
        job_name=env.get("SLURM_JOB_NAME"),
        array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
        array_task_id=_int(env, "SLURM_ARRAY_TASK_ID"),
        restart_count=_int(env, "SLURM_RESTART_COUNT", default=0) or 0,
        nnodes=_int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES", default=1) or 1,
        ntasks=_int(env, "SLURM_NTASKS"),
        ntasks_per_node=_ntasks_per_node(env),
        procid=_int(env, "SLURM_PROCID", default=0) or 0,
        localid=_int(env, "SLURM_LOCALID", default=0) or 0,
        nodeid=_int(env, "SLURM_NODEID", default=0) or 0,
        node_list=env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or None,
        cpus_per_task=_int(env, "SLURM_CPUS_PER_TASK"),
    )


def device_count(devices: int | str | Sequence[int] | None) -> int | None:
    """trainer.devices as a count, or None when Lightning decides (auto, -1)."""
    if devices is None:
        return None
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return None
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        if not text.isdigit():
            raise PhiscaleError(
                f"trainer.devices={devices!r} is not a device count; use e.g. trainer.devices=2"
            )
        return int(text)
    if isinstance(devices, int):
        return None if devices == -1 else devices
    return len(list(devices))


def check_output_dir(output_dir: str | os.PathLike[str], *, on_slurm: bool = False) -> Path:
    """Create `output_dir` if needed and prove it is writable (checkpoints and resume live there)."""
    path = Path(output_dir).expanduser()
    where = " (on SLURM it must be on a filesystem every node shares)" if on_slurm else ""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".phiscale-write-test-"):
            pass
    except OSError as err:
        raise PhiscaleError(
            f"paths.output_dir={str(path)!r} is not writable ({err.strerror or err}); "
            f"set paths.output_dir to a writable directory{where}"
        ) from None
    return path


def check_slurm_layout(
    devices: int | str | Sequence[int] | None,
    num_nodes: int,
    output_dir: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
) -> SlurmEnv | None:
    """Refuse, at start, a SLURM layout that does not match trainer.devices / trainer.num_nodes.

    SLURM starts one process per task and Lightning expects one per device on each node, so
    `--ntasks-per-node` must equal trainer.devices and `--nodes` trainer.num_nodes. Outside
    SLURM (or in an interactive allocation) only the output dir is checked. Returns the job.
    """
    job = slurm_env(environ)
    check_output_dir(output_dir, on_slurm=job is not None)
    if job is None or job.interactive:
        return job
    want = device_count(devices)
    if want is not None:
        if job.ntasks_per_node is None:
            raise PhiscaleError(
                f"SLURM job {job.job_id} has uneven or unknown tasks per node "
                f"(SLURM_TASKS_PER_NODE={(environ or os.environ).get('SLURM_TASKS_PER_NODE')!r}) but "
                f"trainer.devices={devices}; submit with --ntasks-per-node={want}"
            )
        if job.ntasks_per_node != want:
            raise PhiscaleError(
                f"SLURM_NTASKS_PER_NODE={job.ntasks_per_node} but trainer.devices={devices}: SLURM starts one "
                f"process per task and Lightning wants one per device; submit with --ntasks-per-node={want} "
                f"or set trainer.devices={job.ntasks_per_node}"
            )
    if int(num_nodes) != job.nnodes:
        raise PhiscaleError(
            f"SLURM_NNODES={job.nnodes} but trainer.num_nodes={num_nodes}; submit with --nodes={num_nodes} "
            f"or set trainer.num_nodes={job.nnodes}"
        )
    return job


def requeue(job: SlurmEnv) -> bool:
    """Ask SLURM to requeue `job` (the array task itself for arrays): it restarts later with the same
    SLURM_JOB_ID, so the same output dir, and resumes from last.ckpt. False (with a warning) if refused."""
    result = subprocess.run(["scontrol", "requeue", job.run_key], capture_output=True, text=True)
    if result.returncode != 0:
        warnings.warn(f"phiscale: `scontrol requeue {job.run_key}` failed: {result.stderr.strip()}", stacklevel=2)
        return False
    return True
