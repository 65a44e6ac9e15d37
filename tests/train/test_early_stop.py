"""Early stopping of a sweep's run: a real Trainer and RunLogger on a real sqlite store, judged
against the values its stage's other runs recorded at the rung; and a store that does not answer."""

from __future__ import annotations

import pytest

from phiscale.sweeps.pruning import PRUNED_TAG, EarlyStop, rung_key
from phiscale.train.early_stop import AshaEarlyStop, asha_callbacks, stage_values

SWEEP = "study-20261204-abcd"


def recorded_run(client, experiment_id: str, index: int, value: float, stage: str = "search") -> str:
    """A run of the sweep's stage that logged `value` at rung 1 (as AshaEarlyStop logs it)."""
    from mlflow.entities import Metric

    tags = {"phiscale.sweep_id": SWEEP, "phiscale.stage": stage, "sweep_index": str(index)}
    run_id = client.create_run(experiment_id, tags=tags).info.run_id
    client.log_batch(run_id, metrics=[Metric(rung_key("val/loss", 1), value, 0, 10)])
    return run_id


def run_logger(tmp_path, uri: str, mode: str = "online"):
    from phiscale.tracking import RunLogger

    return RunLogger(output_dir=tmp_path / "run", tracking_uri=uri, experiment="asha", run_name="candidate",
                     params={}, tags={"phiscale.sweep_id": SWEEP, "phiscale.stage": "search", "sweep_index": "9"},
                     mode=mode, heartbeat_s=0)


def test_a_run_worse_than_its_stage_at_the_rung_is_pruned_there_and_ends_finished(
        tmp_path, tiny_classifier, fixed_batches, cpu_trainer):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("asha")
    for index in (0, 1):  # two runs before it, far better at rung 1 than 5 steps of training can be
        recorded_run(client, experiment_id, index, 1e-6)
    recorded_run(client, experiment_id, 2, 1e-9, stage="scale")  # another stage: not compared
    logger = run_logger(tmp_path, uri)
    lines: list[str] = []
    asha = AshaEarlyStop(EarlyStop("val/loss", "min", (1, 2), 2), tracking_uri=uri, experiment="asha",
                         sweep_id=SWEEP, stage="search", wait_s=60, echo=lines.append)
    trainer = cpu_trainer(max_epochs=4, logger=logger, callbacks=[asha])
    logger.open()
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(5), val_dataloaders=fixed_batches(2, seed=1))
    logger.close("finished", 60)

    assert trainer.current_epoch == 1, "stopped after the rung epoch, not at max_epochs"
    assert asha.pruned_at == 1
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[PRUNED_TAG] == "1"
    assert rung_key("val/loss", 1) in run.data.metrics, "its own rung value is in MLflow for the runs after it"
    assert lines == [lines[0]] and "2 of 3 values at this rung are better (the best 2 continue) -> is pruned" in lines[0]
    assert sorted(stage_values(uri, "asha", SWEEP, "search", rung_key("val/loss", 1), exclude=None)) == [
        1e-6, 1e-6, run.data.metrics[rung_key("val/loss", 1)]]


def test_the_first_run_at_a_rung_continues_and_trains_to_the_end(tmp_path, tiny_classifier, fixed_batches,
                                                                  cpu_trainer):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    logger = run_logger(tmp_path, uri)
    lines: list[str] = []
    asha = AshaEarlyStop(EarlyStop("val/loss", "min", (1,), 3), tracking_uri=uri, experiment="asha",
                         sweep_id=SWEEP, stage="search", echo=lines.append)
    trainer = cpu_trainer(max_epochs=2, logger=logger, callbacks=[asha])
    logger.open()
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(3), val_dataloaders=fixed_batches(1, seed=1))
    logger.close("finished", 60)
    assert trainer.current_epoch == 2 and asha.pruned_at is None
    assert lines and lines[0].endswith("0 of 1 values at this rung are better (the best 1 continue) -> continues")


def test_with_mlflow_unreachable_at_the_rung_the_run_continues_and_says_so(tmp_path, tiny_classifier,
                                                                          fixed_batches, cpu_trainer, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = "http://127.0.0.1:9"  # the discard port: nothing listens
    logger = run_logger(tmp_path, uri, mode="offline")
    lines: list[str] = []
    asha = AshaEarlyStop(EarlyStop("val/loss", "min", (1,), 3), tracking_uri=uri, experiment="asha",
                         sweep_id=SWEEP, stage="search", wait_s=1, echo=lines.append)
    trainer = cpu_trainer(max_epochs=2, logger=logger, callbacks=[asha])
    logger.open()
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(3), val_dataloaders=fixed_batches(1, seed=1))
    logger.close("finished", 1)
    assert trainer.current_epoch == 2 and asha.pruned_at is None, "never pruned on missing data"
    assert len(lines) == 1 and lines[0].startswith("phiscale: rung 1: MLflow at http://127.0.0.1:9 unreachable (")
    assert lines[0].endswith("the run continues (never pruned on missing data)")


def test_the_config_asks_for_early_stopping_only_in_a_recorded_sweep():
    from omegaconf import OmegaConf

    from phiscale.errors import PhiscaleError

    base = {"tracking": {"experiment": "e"}, "sweep": {"id": None, "stage": None,
                                                         "early_stop": {"metric": None, "mode": "min", "rungs": [], "eta": 3}}}
    assert asha_callbacks(OmegaConf.create(base), "sqlite:///x.db") == []
    asked = OmegaConf.merge(base, {"sweep": {"early_stop": {"metric": "val/loss", "rungs": [2]}}})
    with pytest.raises(PhiscaleError, match=r"sweep.early_stop.metric=val/loss needs a recorded sweep"):
        asha_callbacks(asked, "sqlite:///x.db")
    [callback] = asha_callbacks(OmegaConf.merge(asked, {"sweep": {"id": SWEEP, "stage": "search"}}), "sqlite:///x.db")
    assert callback.rule == EarlyStop("val/loss", "min", (2,), 3.0) and callback.stage == "search"
