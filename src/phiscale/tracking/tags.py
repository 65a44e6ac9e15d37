"""What a run says about itself besides its metrics: the flattened config as params, and the
environment (commit, host, world size, SLURM job) as tags."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PARAM_VALUE_LIMIT = 6000  # MLflow 3 rejects longer param values (docs: "Logging params")
TAG_VALUE_LIMIT = 5000
# A training run's tags that readers find it by (sync's lost-run check); here, not beside the logger
# that sets them, so that readers do not import Lightning (issue 31: `phiscale-sweep status`).
OUTPUT_DIR_TAG = "phiscale.output_dir"
HEARTBEAT_S_TAG = "phiscale.heartbeat_s"


def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"model": {"phi": 1}}` -> `{"model.phi": "1"}`; values cut to MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = str(value)[:PARAM_VALUE_LIMIT]
    return flat


def git_commit(repo: Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_tags(world_size: int) -> dict[str, str]:
    """Where and how the run ran: commit, host, world size, and the SLURM job (`phiscale.slurm.env`)."""
    from phiscale.slurm.env import slurm_env

    tags = {"git_commit": git_commit(), "host": socket.gethostname(), "world_size": str(world_size)}
    job = slurm_env()
    if job is not None:
        slurm = {
            "slurm_job_id": job.job_id,
            "slurm_array_job_id": job.array_job_id,
            "slurm_array_task_id": job.array_task_id,
            "slurm_restart_count": job.restart_count,
        }
        tags.update({k: str(v) for k, v in slurm.items() if v is not None})
    return tags


def system_tags(note: str, commit: str | None = None) -> dict[str, str]:
    """MLflow's own tags, which its UI shows: where the run came from (the Source column), who ran
    it, its commit, and a short description (`mlflow.note.content`, the run page's description)."""
    from phiscale.slurm.env import slurm_env

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {
        "mlflow.source.name": os.path.basename(sys.argv[0]) or "python",
        "mlflow.source.type": "JOB" if slurm_env() is not None else "LOCAL",  # mlflow.entities.SourceType
        "mlflow.source.git.commit": commit or git_commit(),
        "mlflow.user": user,
        "mlflow.note.content": note[:TAG_VALUE_LIMIT],
    }
