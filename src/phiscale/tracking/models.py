"""A finished run's model in MLflow: saved beside the run, then logged as a LoggedModel of the run.

At the end of a run the serving model (`phiscale.models.serving.UInt8Classifier`) is saved with
MLflow's own pt2 format (torch.export: loading it needs torch and mlflow, never phiscale) into
`<output_dir>/model/`, and a `model` entry goes into the run's journal. The sender turns the entry
into a LoggedModel whose source run is the run (params, the val metrics at the checkpoint's step,
the files) and, with `tracking.register=NAME`, a version of NAME (`registry`). Like every journal
entry it is sent at least once, survives an outage and is sent by `phiscale-sync` in offline mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_DIR = "model"
MODEL_NAME = "model"
KEY_TAG = "phiscale.model_key"  # the run's journal entry: a resend finds the LoggedModel again


def signature(num_classes: int, resolution: int):
    """uint8 (N, 3, H, W) in, float32 logits (N, num_classes) out; N is free (-1)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 3, resolution, resolution), "images")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "logits")]),
    )


def requirements() -> list[str]:
    """What loading the model needs: torch and mlflow at this run's versions (given, not inferred:
    MLflow's inference loads the model again in a subprocess, seconds at every run's end)."""
    import mlflow
    import numpy
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"numpy=={numpy.__version__}"]


def save_serving_model(model, example, num_classes: int, out_dir: Path) -> Path:
    """Save `model` (uint8 batch -> logits) in MLflow's pt2 format into `out_dir` (replaced)."""
    import shutil

    import mlflow.pytorch

    resolution = int(example.shape[-1])
    if out_dir.exists():
        shutil.rmtree(out_dir)
    mlflow.pytorch.save_model(model.eval(), str(out_dir), serialization_format="pt2",
                              signature=signature(num_classes, resolution), input_example=example,
                              pip_requirements=requirements())
    return out_dir


def send_model(mlflow, entry: Mapping[str, Any], *, run_id: str, experiment_id: str, output_dir: Path,
               tracking_uri: str) -> str:
    """The sender's half: the LoggedModel (found again on a resend), its metrics at the checkpoint's
    step linked to the run, its files, READY; then the registration. Returns the model id."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model

    from phiscale.tracking import registry

    path = Path(entry["path"])
    path = path if path.is_absolute() else output_dir / path
    if not (path / "MLmodel").is_file():
        raise FileNotFoundError(f"{path}/MLmodel is missing")
    key = f"{run_id}:{entry['seq']}"
    found = [m for m in mlflow.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
             if m.tags.get(KEY_TAG) == key]
    model = found[0] if found else mlflow.create_logged_model(
        experiment_id, name=entry.get("name", MODEL_NAME), source_run_id=run_id, tags={KEY_TAG: key},
        params={k: str(v) for k, v in entry["params"].items()}, model_type="image-classifier")
    step = int(entry["step"])
    if str(getattr(model.status, "name", model.status)) != "READY":
        mlflow.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
        # the run's own points again, with the model's id: MLflow keeps one copy in the run's history
        mlflow.log_batch(run_id, metrics=[Metric(k, float(v), int(t), int(at), model_id=model.model_id)
                                          for k, v, t, at in entry["metrics"]])
        mlmodel = Model.load(str(path / "MLmodel"))
        mlmodel.model_uuid = mlmodel.model_id = model.model_id
        mlmodel.run_id, mlmodel.artifact_path = run_id, model.artifact_location
        mlmodel.save(str(path / "MLmodel"))
        mlflow.log_model_artifacts(model.model_id, str(path))
        mlflow.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    if entry.get("register"):
        registry.register_version(mlflow, entry["register"], model_id=model.model_id, run_id=run_id,
                                  score=score(entry),
                                  tracking_uri=tracking_uri)
    return model.model_id


def score(entry: Mapping[str, Any]) -> float:
    """The model entry's val/top1_best (what `best` ranks by); NaN when it has none."""
    return next((float(v) for k, v, _, _ in entry["metrics"] if k == "val/top1_best"), float("nan"))


def model_info(uri: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """What `runs:/…`, `models:/NAME/VERSION`, `models:/NAME@ALIAS` or `models:/<model_id>` names: the
    LoggedModel's id, params and source run (for phiscale-eval's data and its MLflow writes)."""
    import logging

    import mlflow

    from phiscale.tracking.store import client

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
    previous = mlflow.get_tracking_uri() if tracking_uri else None
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
        mlflow_client = client(tracking_uri or mlflow.get_tracking_uri())
        logged = mlflow_client.get_logged_model(info.model_id) if info.model_id else None
    finally:
        if previous:
            mlflow.set_tracking_uri(previous)
    return {"model_id": info.model_id, "params": dict(logged.params) if logged else {},
            "run_id": logged.source_run_id if logged else info.run_id,
            "experiment_id": logged.experiment_id if logged else None}


def load_logged_model(uri: str, tracking_uri: str | None = None):
    """The model `uri` names, as MLflow loads it (an ExportedProgram's module for pt2)."""
    import mlflow
    import mlflow.pytorch

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pytorch.load_model(uri)
