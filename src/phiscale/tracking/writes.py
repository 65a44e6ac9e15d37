"""MLflow writes outside a training run: `phiscale-eval`'s metrics and `phiscale-report`'s run."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from phiscale.tracking.store import client, get_or_create_experiment
from phiscale.tracking.tags import TAG_VALUE_LIMIT


def log_evaluation(
    tracking_uri: str,
    metrics: Mapping[str, float],
    *,
    step: int,
    run_id: str | None = None,
    experiment: str = "phiscale",
    run_name: str = "eval",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log evaluation metrics into `run_id` (the checkpoint's own run) or a new run; returns its id."""
    from mlflow.entities import Metric, RunTag

    mlflow = client(tracking_uri)
    if run_id is None:
        experiment_id = get_or_create_experiment(mlflow, experiment)
        run_id = mlflow.create_run(experiment_id, run_name=run_name, tags=dict(tags or {})).info.run_id
        mlflow.set_terminated(run_id, "FINISHED")
    now = int(time.time() * 1000)
    mlflow.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)[:TAG_VALUE_LIMIT]) for k, v in (tags or {}).items()],
    )
    return run_id


def log_report_run(tracking_uri: str, experiment_id: str, files: Sequence[Path], *, run_name: str,
                   tags: Mapping[str, str]) -> str:
    """A finished run holding a report's `files` as artifacts (FAILED if an upload fails)."""
    mlflow = client(tracking_uri)
    run_id = mlflow.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
    try:
        for path in files:
            mlflow.log_artifact(run_id, str(path))
    except BaseException:
        mlflow.set_terminated(run_id, status="FAILED")
        raise
    mlflow.set_terminated(run_id, status="FINISHED")
    return run_id
