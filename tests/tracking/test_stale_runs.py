"""No stale runs: a refused config leaves no run, a failure before training marks the run FAILED
with the error, and a SIGKILLed run shows as `lost` until `phiscale-sync --reap` marks it KILLED."""

from __future__ import annotations

import subprocess

import lightning.pytorch as L
import pytest
from mlflow.tracking import MlflowClient
from support.runs import FAST, SYNC, TRAIN, Training, sent_seq, wait_for

from phiscale.config import compose_config
from phiscale.report.rows import read_runs
from phiscale.train.run import run_training


def test_a_config_lightning_would_refuse_is_refused_before_any_run_exists(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = subprocess.run([TRAIN, *FAST, "trainer.max_epochs=-3", f"tracking.uri={uri}", f"paths.root={tmp_path}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "trainer.max_epochs=-3 must be an integer >= -1" in last, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("phiscale")
    assert experiment is None or not client.search_runs([experiment.experiment_id]), "a refused config left a run"


class FailAtTrainStart(L.Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("the data went away")


def test_a_failure_after_the_run_opened_marks_it_failed_with_the_error(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose_config([*FAST, f"tracking.uri={uri}", f"paths.root={tmp_path}"])
    with pytest.raises(RuntimeError, match="the data went away"):
        run_training(cfg, extra_callbacks=[FailAtTrainStart()])
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["phiscale.error"] == "RuntimeError: the data went away"


@pytest.mark.slow
def test_a_sigkilled_run_shows_as_lost_then_reap_marks_it_killed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "run"
    training = Training([*FAST, "trainer.max_epochs=200", "tracking.heartbeat_s=1", f"tracking.uri={uri}",
                         f"paths.output_dir={out}", "tracking.experiment=stale"], tmp_path / "log")
    client = MlflowClient(uri)

    def beating():
        experiment = client.get_experiment_by_name("stale")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return runs and "phiscale.heartbeat" in runs[0].data.tags and sent_seq(out) > 2

    wait_for(beating, 300, "the run's heartbeat reaches the store", training)
    training.kill()  # no goodbye: MLflow still says RUNNING
    run_id = client.search_runs([client.get_experiment_by_name("stale").experiment_id])[0].info.run_id
    assert client.get_run(run_id).info.status == "RUNNING"

    status = wait_for(lambda: {r.run_id: r.status for r in read_runs("stale", uri)[1]}[run_id] == "LOST",
                      120, "the report shows the silent run as lost")
    assert status
    reaped = subprocess.run([SYNC, "--reap", "stale", "--tracking-uri", uri], capture_output=True, text=True,
                            timeout=300)
    assert reaped.returncode == 0 and "marked KILLED" in reaped.stdout, reaped.stdout + reaped.stderr
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "no heartbeat since" in run.data.tags["phiscale.reaped"]
    assert {r.run_id: r.status for r in read_runs("stale", uri)[1]}[run_id] == "KILLED"
