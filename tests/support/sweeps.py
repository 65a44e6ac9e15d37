"""A recorded sweep in a real sqlite MLflow store, with child runs logged as training logs them
(tags, params, metrics, status), without training: for the status, report and CLI tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from phiscale.sweeps.file import load_sweep
from phiscale.sweeps.record import SweepRecord, create_record, open_parent_run

HEARTBEAT_S = 600  # a RUNNING child is lost after 5 silent beats: 50 min, far beyond any test
# Two φ points × three seeds (runs 0-2: φ=0, 3-5: φ=1), as a sweep file.
TWO_BY_THREE = "name: duo\ndescription: two points, three seeds\nbase: [model=efficientnet]\n" \
               "grid:\n  model.phi: [0, 1]\nseeds: [0, 1, 2]\n"


@dataclass
class Child:
    """What one run of the sweep logged (None: not logged)."""

    status: str = "FINISHED"  # MLflow status; RUNNING runs get a heartbeat `silent_s` old
    top1: float | None = 0.9
    images_per_s: float | None = 100.0
    macs: float = 1e6
    params: float = 1e5
    tags: dict[str, str] = field(default_factory=dict)  # scale tags (phi, depth_mult, …)
    aug: dict[str, str] = field(default_factory=dict)  # params aug.*
    silent_s: float = 0.0  # > 5 × HEARTBEAT_S: lost
    restarts: int = 0


def recorded_sweep(tmp_path: Path, uri: str, text: str = TWO_BY_THREE, experiment: str = "sweeps") -> SweepRecord:
    """Write a sweep file, record it under tmp_path/out and open its parent run in `uri`."""
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    record = create_record(load_sweep(path), root=tmp_path / "out", extra=["trainer.max_epochs=1"],
                           submit_command="phiscale-sweep submit sweep.yaml", tracking_uri=uri, experiment=experiment)
    open_parent_run(record)
    return record


def log_child(record: SweepRecord, index: int, child: Child) -> str:
    """A child run of `record` for run `index`, as phiscale-train would leave it; returns its id."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(record.tracking_uri)
    experiment_id = client.get_experiment_by_name(record.experiment).experiment_id
    now = time.time()
    tags = {**record.child_tags(index), "model": "efficientnet", "family": "efficientnet", **child.tags,
            "phiscale.heartbeat_s": str(HEARTBEAT_S), "phiscale.heartbeat": f"{now - child.silent_s:.3f}",
            "restarts": str(child.restarts)}
    start = int((now - 3600) * 1000)
    run_id = client.create_run(experiment_id, run_name=f"run{index}", tags=tags, start_time=start).info.run_id
    metrics = [Metric("model/macs_eval", child.macs, start, 0), Metric("model/params", child.params, start, 0)]
    if child.top1 is not None:
        metrics += [Metric("val/top1", child.top1, start, 9), Metric("val/top1_best", child.top1, start, 9)]
    if child.images_per_s is not None:
        metrics.append(Metric("perf/images_per_s", child.images_per_s, start, 9))
    params = [Param(k, v) for k, v in {"seed": str(record.point(index).seed), **child.aug}.items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    if child.status != "RUNNING":
        client.set_terminated(run_id, child.status, end_time=start + 1_800_000)
    return run_id
