"""A finished run's model in MLflow: saved beside the run, then logged as a LoggedModel of the run.

At the end of a run the serving model (`phiscale.models.serving.UInt8Classifier`) is saved with
MLflow's own pt2 format (torch.export: loading it needs torch and mlflow, never phiscale) into
`<output_dir>/model/`, and a `model` entry goes into the run's journal. The sender turns the entry
into a LoggedModel whose source run is the run (params, the val metrics at the checkpoint's step,
the files) and, with `tracking.register=NAME`, a version of NAME (`registry`). Like every journal
entry it is sent at least once, survives an outage and is sent by `phiscale-sync` in offline mode.

With `tracking.register=NAME` the sender also saves and registers `NAME-images`: MLflow
models-from-code (`image_model.py`, self-contained) around the same network, taking encoded image
files and answering class names, its `best` alias on the twin of NAME's (`registry.settle_best_alias`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODEL_DIR = "model"
MODEL_NAME = "model"
KEY_TAG = "phiscale.model_key"  # the run's journal entry: a resend finds the LoggedModel again
IMAGES = "-images"  # NAME-images: the image-file model beside NAME (and its LoggedModel, model-images)
IMAGE_MODEL_CODE = Path(__file__).with_name("image_model.py")
PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
DEFAULT_CROP_RATIO = 0.875  # phiscale.data.batch_loader.DEFAULT_CROP_RATIO, for a data config without one


class UnsavedModel(Exception):
    """The image-file model could not be saved here: the sender refuses the entry with this line."""


def signature(num_classes: int, resolution: int):
    """uint8 (N, 3, H, W) in, float32 logits (N, num_classes) out; N is free (-1). The input has no
    name: pyfunc's schema enforcement hands a named tensor input to the flavor as a dict, which
    MLflow's PyTorch wrapper refuses (mlflow/models/utils.py `_enforce_tensor_schema`)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, 3, resolution, resolution))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "logits")]),
    )


def images_signature(top_k: int = 5):
    """A column `image` of encoded files in; per row label, probability and top_k out; param k."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array, Object, Property

    pairs = Array(Object([Property("label", "string"), Property("probability", "double")]))
    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "probability"), ColSpec(pairs, "top_k")]),
        params=ParamSchema([ParamSpec("k", "long", top_k)]),
    )


def requirements() -> list[str]:
    """What loading the model needs: torch and mlflow at this run's versions (given, not inferred:
    MLflow's inference loads the model again in a subprocess, seconds at every run's end)."""
    import mlflow
    import numpy
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"numpy=={numpy.__version__}"]


def images_requirements() -> list[str]:
    """What image_model.py imports, at this process's versions."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "pillow", "numpy", "pandas", "mlflow")]


def images_config(params: Mapping[str, str]) -> dict[str, Any]:
    """image_model.py's model_config from the LoggedModel's params: the class names and how the run's
    validation cut its images (data.loader, data.crop_ratio) at the eval resolution."""
    import json

    data = json.loads(params["data"])
    return {"class_names": json.loads(params["class_names"]), "resolution": int(params["eval_resolution"]),
            "crop_ratio": float(data.get("crop_ratio") or DEFAULT_CROP_RATIO),
            "resize": "torch" if data.get("loader") == "torch" else "ffcv"}


def save_images_model(network_dir: Path, params: Mapping[str, str], out_dir: Path) -> Path:
    """Save the image-file model (image_model.py around the pt2 archive of the tensor model in
    `network_dir`) into `out_dir`; its input example is the tensor model's first image as a PNG."""
    import io
    import shutil

    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import Model
    from PIL import Image

    if out_dir.exists():
        shutil.rmtree(out_dir)
    tensor_model = Model.load(str(network_dir / "MLmodel"))
    archive = network_dir / tensor_model.flavors["pytorch"]["model_data"] / "model.pt2"  # MLflow's pt2 layout
    example = tensor_model.load_input_example(str(network_dir))
    png = io.BytesIO()
    Image.fromarray(example[0].transpose(1, 2, 0)).save(png, format="PNG")
    with quiet_saving():
        mlflow.pyfunc.save_model(str(out_dir), python_model=str(IMAGE_MODEL_CODE), artifacts={"network": str(archive)},
                                 model_config=images_config(params), signature=images_signature(),
                                 input_example=pd.DataFrame({"image": [png.getvalue()]}),
                                 pip_requirements=images_requirements())
    return out_dir


@contextmanager
def quiet_saving():
    """Without the progress bar of MLflow's copy of a local artifact and its INFO line on validating
    the input example: the run's output keeps its one line per logged model."""
    import logging
    import os

    log = logging.getLogger("mlflow.pyfunc")
    level, bar = log.level, os.environ.get(PROGRESS_BAR)
    log.setLevel(logging.WARNING)
    os.environ[PROGRESS_BAR] = "false"
    try:
        yield
    finally:
        log.setLevel(level)
        if bar is None:
            os.environ.pop(PROGRESS_BAR, None)
        else:
            os.environ[PROGRESS_BAR] = bar


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
    step linked to the run, its files, READY; then the registration, and NAME-images beside NAME.
    Returns the model id."""
    from phiscale.tracking import registry

    path = Path(entry["path"])
    path = path if path.is_absolute() else output_dir / path
    if not (path / "MLmodel").is_file():
        raise FileNotFoundError(f"{path}/MLmodel is missing")
    key = f"{run_id}:{entry['seq']}"
    name = entry.get("name", MODEL_NAME)
    model_id = _log_files(mlflow, entry, path, key=key, name=name, run_id=run_id, experiment_id=experiment_id)
    if entry.get("register"):
        registry.register_version(mlflow, entry["register"], model_id=model_id, run_id=run_id, score=score(entry),
                                  tracking_uri=tracking_uri)
        images = path.parent / f"{path.name}{IMAGES}"
        if not (images / "MLmodel").is_file():
            try:
                save_images_model(path, entry["params"], images)
            except Exception as err:  # noqa: BLE001 (a local failure, not the store's: sending again won't help)
                raise UnsavedModel(f"{entry['register']} is registered, {entry['register']}{IMAGES} was not saved "
                                   f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
                                   ) from None
        images_id = _log_files(mlflow, entry, images, key=f"{key}{IMAGES}", name=f"{name}{IMAGES}", run_id=run_id,
                               experiment_id=experiment_id)
        registry.register_version(mlflow, f"{entry['register']}{IMAGES}", model_id=images_id, run_id=run_id,
                                  score=score(entry), tracking_uri=tracking_uri, twin_of=(entry["register"], model_id))
    return model_id


def _log_files(mlflow, entry: Mapping[str, Any], path: Path, *, key: str, name: str, run_id: str,
               experiment_id: str) -> str:
    """The LoggedModel of `path` (found again by `key` on a resend): the entry's params and metrics,
    the files, READY. Returns its id."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
    from mlflow.models import Model

    found = [m for m in mlflow.search_logged_models([experiment_id], filter_string=f"source_run_id = '{run_id}'")
             if m.tags.get(KEY_TAG) == key]
    model = found[0] if found else mlflow.create_logged_model(
        experiment_id, name=name, source_run_id=run_id, tags={KEY_TAG: key},
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
