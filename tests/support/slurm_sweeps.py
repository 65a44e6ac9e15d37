"""`phiscale-sweep` as a user on the SLURM testbed's login node runs it, and the logs its jobs leave:
for the tests under tests/slurm/ that submit sweeps and studies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.runs import TRAIN


def sweep_cli(slurm, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`phiscale-sweep ARGS` with the testbed's SLURM_CONF and this venv's training app."""
    env = {**slurm.env, "PHISCALE_TRAIN": TRAIN}
    return subprocess.run([sys.executable, "-m", "phiscale.cli.sweep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def logs(record_dir: Path) -> str:
    """The tail of every task's log (in the runs' output dirs) and of every closer's, for a failure."""
    return "\n".join(f"--- {p}\n" + p.read_text(errors="replace")[-2500:]
                     for p in sorted([*record_dir.glob("points/*/slurm-*.out"), *record_dir.glob("close-*.out")]))
