"""A finished digits run ends in a model: a LoggedModel of the run, registered with the `best` alias,
loadable where phiscale is not installed (as the PyTorch flavor and as pyfunc), answering
`mlflow models predict`, and evaluated back to the run's own best val top-1. The run is the digits
demo, trained once per session (conftest.registered_digits); its image-file twin is served in
test_image_model.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from support.runs import BIN

from phiscale.cli.eval import main as eval_main

# A process where `import phiscale` fails (a stub that raises comes first on sys.path): what a user
# without phiscale has. It loads the registered model and feeds it a uint8 batch of its signature's shape,
# as the PyTorch flavor (mlflow.pytorch) and as pyfunc (what `mlflow models serve` and spark_udf call).
LOAD_WITHOUT_PHISCALE = """
import json, sys
sys.path.insert(0, sys.argv[1])
try:
    import phiscale
    raise SystemExit("phiscale imported")
except ImportError:
    pass
import mlflow, mlflow.pytorch, numpy as np, torch
mlflow.set_tracking_uri(sys.argv[2])
spec = mlflow.models.get_model_info(sys.argv[3]).signature.inputs.inputs[0]
model = mlflow.pytorch.load_model(sys.argv[3])
shape = [5 if d == -1 else d for d in spec.shape]
batch = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
logits = model(torch.from_numpy(batch)).detach().numpy()
served = mlflow.pyfunc.load_model(sys.argv[3]).predict(batch)
print(json.dumps({"dtype": str(spec.type), "shape": list(spec.shape), "logits": list(logits.shape),
                  "pyfunc_differs_by": float(np.abs(served - logits).max()),
                  "phiscale": [m for m in sys.modules if m.startswith("phiscale")]}))
"""


@pytest.mark.slow
@pytest.mark.background("registered-digits")  # reads the run trained in the background queue
def test_a_registered_run_model_loads_without_phiscale_and_evaluates_to_the_runs_top1(registered_digits,
                                                                                       without_phiscale, capsys):
    uri = registered_digits.uri
    # the demo has tracking.log_model=false: tracking.register=NAME logs the model all the same
    saved = [line for line in registered_digits.stdout.splitlines() if "saved the model" in line or "logged model" in line]
    assert len(saved) == 2, registered_digits.stdout[-2000:]

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    models = {m.name: m for m in client.search_logged_models([run.info.experiment_id])}
    assert sorted(models) == ["model", "model-images"], "the tensor model and, registered, the image-file model"
    logged = models["model"]
    assert logged.source_run_id == run.info.run_id and str(logged.status) in ("READY", "LoggedModelStatus.READY")
    assert sorted(o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs) == sorted(
        m.model_id for m in models.values())
    params = logged.params
    assert params["model"] == "mobilenet_v3_small" and params["width_mult"] == "1"
    assert json.loads(params["class_names"]) == [str(i) for i in range(10)] and params["eval_resolution"] == "32"
    assert int(params["macs"]) > 0 and int(params["params"]) > 0 and json.loads(params["mean"]) == [79.0] * 3
    best = max(m.value for m in client.get_metric_history(run.info.run_id, "val/top1_best"))
    epochs = len(client.get_metric_history(run.info.run_id, "val/top1"))
    for model in models.values():
        linked = {m.key: m.value for m in model.metrics}
        assert linked["val/top1_best"] == pytest.approx(best) and "val/top1" in linked and "val/loss" in linked
    for key in linked:  # linked as the run's own points, for both models: its history gains none
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == epochs == len(set(steps)), f"{key}: {steps} (one point per epoch)"

    version = client.get_model_version_by_alias("digits-net", "best")
    # MLflow 3.17's sqlite registry keeps no model_id column: the version names it by its source (and our tag)
    assert version.source == f"models:/{logged.model_id}" and version.run_id == run.info.run_id

    loaded = subprocess.run([sys.executable, "-I", "-c", LOAD_WITHOUT_PHISCALE, str(without_phiscale), uri,
                             "models:/digits-net@best"], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    facts = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert facts == {"dtype": "uint8", "shape": [-1, 3, 32, 32], "logits": [5, 10], "pyfunc_differs_by": 0.0,
                     "phiscale": []}, facts

    eval_main(["models:/digits-net@best", "--tracking-uri", uri, "--num-workers", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    top1 = float(out.split("top-1 ")[1].split()[0])
    assert abs(top1 - best) <= 0.01, f"models:/digits-net@best evaluates to {top1}, the run logged {best}"
    evaluated = client.get_run(run.info.run_id).data
    assert evaluated.metrics["eval/top1"] == pytest.approx(top1, abs=1e-4), "the eval goes into the source run"
    assert evaluated.tags["eval_checkpoint"] == "models:/digits-net@best"


@pytest.mark.slow
@pytest.mark.background("registered-digits")  # reads the run trained in the background queue
def test_mlflow_models_predict_answers_a_json_batch_with_the_models_logits(registered_digits, tmp_path):
    """The CLI MLflow users reach for (it parses JSON as the scoring server does): the logits of the
    PyTorch flavor on the same uint8 batch. (Before the signature's input lost its name: "The PyTorch
    flavor does not support List or Dict input types".)"""
    import mlflow.pytorch
    import numpy as np
    import torch

    batch = np.random.default_rng(1).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    (tmp_path / "in.json").write_text(json.dumps({"inputs": batch.tolist()}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered_digits.uri}
    done = subprocess.run([str(BIN / "mlflow"), "models", "predict", "-m", "models:/digits-net@best", "-i",
                           str(tmp_path / "in.json"), "-o", str(tmp_path / "out.json"), "-t", "json",
                           "--env-manager", "local"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    answered = np.array(json.loads((tmp_path / "out.json").read_text())["predictions"])
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registered_digits.uri)
    try:
        expected = mlflow.pytorch.load_model("models:/digits-net@best")(torch.from_numpy(batch)).detach().numpy()
    finally:
        mlflow.set_tracking_uri(previous)
    assert answered.shape == (3, 10) and np.allclose(answered, expected, atol=1e-5)
