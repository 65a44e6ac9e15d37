"""phiscale's processes make no calls home: MLflow's telemetry is off unless the user turns it on."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import phiscale, mlflow.telemetry.utils as t, os; print(os.environ['MLFLOW_DISABLE_TELEMETRY'], t.MLFLOW_DISABLE_TELEMETRY.get())"


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                            env={**clean, **env})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_importing_phiscale_turns_mlflow_telemetry_off_unless_the_user_turned_it_on():
    assert _probe() == "true True", "MLflow sees telemetry disabled in every phiscale process"
    assert _probe(MLFLOW_DISABLE_TELEMETRY="false") == "false False", "the user's choice wins"
