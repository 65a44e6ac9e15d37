"""A finished digits run ends in a model: a LoggedModel of the run, registered with the `best` alias,
loadable where phiscale is not installed, and evaluated back to the run's own best val top-1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from support.runs import TRAIN

from phiscale.cli.eval import main as eval_main

# A process where `import phiscale` fails (a stub that raises comes first on sys.path): what a user
# without phiscale has. It loads the registered model and feeds it a uint8 batch of its signature's shape.
LOAD_WITHOUT_PHISCALE = """
import json, sys
sys.path.insert(0, sys.argv[1])
try:
    import phiscale
    raise SystemExit("phiscale imported")
except ImportError:
    pass
import mlflow, mlflow.pytorch, torch
mlflow.set_tracking_uri(sys.argv[2])
spec = mlflow.models.get_model_info(sys.argv[3]).signature.inputs.inputs[0]
model = mlflow.pytorch.load_model(sys.argv[3])
shape = [5 if d == -1 else d for d in spec.shape]
logits = model(torch.randint(0, 256, shape, dtype=torch.uint8))
print(json.dumps({"dtype": str(spec.type), "shape": list(spec.shape), "logits": list(logits.shape),
                  "phiscale": [m for m in sys.modules if m.startswith("phiscale")]}))
"""


@pytest.mark.slow
def test_a_registered_run_model_loads_without_phiscale_and_evaluates_to_the_runs_top1(fast_overrides, tmp_path,
                                                                                       capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # FAST has tracking.log_model=false: tracking.register=NAME logs the model all the same
    done = subprocess.run([TRAIN, *fast_overrides, "run_name=registered", "tracking.register=digits-net"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = [line for line in done.stdout.splitlines() if "saved the model" in line or "logged model" in line]
    assert len(saved) == 2, done.stdout[-2000:]

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    (logged,) = client.search_logged_models([run.info.experiment_id])
    assert logged.source_run_id == run.info.run_id and str(logged.status) in ("READY", "LoggedModelStatus.READY")
    assert [o.model_id for o in client.get_run(run.info.run_id).outputs.model_outputs] == [logged.model_id]
    params = logged.params
    assert params["model"] == "mobilenet_v3_small" and params["width_mult"] == "0.5"
    assert json.loads(params["class_names"]) == [str(i) for i in range(10)] and params["eval_resolution"] == "32"
    assert int(params["macs"]) > 0 and int(params["params"]) > 0 and json.loads(params["mean"]) == [79.0] * 3
    best = max(m.value for m in client.get_metric_history(run.info.run_id, "val/top1_best"))
    linked = {m.key: m.value for m in logged.metrics}
    assert linked["val/top1_best"] == pytest.approx(best) and "val/top1" in linked and "val/loss" in linked
    for key in linked:  # linked as the run's own points: its history gains none
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == 2 == len(set(steps)), f"{key}: {steps} (one point per epoch)"

    version = client.get_model_version_by_alias("digits-net", "best")
    # MLflow 3.17's sqlite registry keeps no model_id column: the version names it by its source (and our tag)
    assert version.source == f"models:/{logged.model_id}" and version.run_id == run.info.run_id

    stub = tmp_path / "stub" / "phiscale"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('phiscale is not installed here')\n")
    loaded = subprocess.run([sys.executable, "-I", "-c", LOAD_WITHOUT_PHISCALE, str(stub.parent), uri,
                             "models:/digits-net@best"], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    facts = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert facts == {"dtype": "uint8", "shape": [-1, 3, 32, 32], "logits": [5, 10], "phiscale": []}, facts

    eval_main(["models:/digits-net@best", "--tracking-uri", uri, "--num-workers", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    top1 = float(out.split("top-1 ")[1].split()[0])
    assert abs(top1 - best) <= 0.01, f"models:/digits-net@best evaluates to {top1}, the run logged {best}"
    evaluated = client.get_run(run.info.run_id).data
    assert evaluated.metrics["eval/top1"] == pytest.approx(top1, abs=1e-4), "the eval goes into the source run"
    assert evaluated.tags["eval_checkpoint"] == "models:/digits-net@best"
