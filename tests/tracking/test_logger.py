"""The training logger: a run's identity and history live in its output dir; a resume continues
them without logging a step twice; offline runs touch no store."""

from __future__ import annotations

import pytest

from phiscale.errors import PhiscaleError
from phiscale.tracking import RunLogger, client
from phiscale.tracking.journal import RunRecord, read_entries, tracking_dir


def make(out, uri, **kwargs):
    return RunLogger(output_dir=out, tracking_uri=uri, experiment="logger", run_name="r",
                     params={"model.phi": "1", "optim.lr": "0.1"}, tags={"model": "efficientnet"}, **kwargs)


def test_offline_journals_everything_and_contacts_no_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'never.db'}"
    logger = make(tmp_path / "out", uri, mode="offline")
    record = logger.open()
    logger.log_metrics({"train/loss": 2.0}, step=1)
    (tmp_path / "out" / "config.yaml").write_text("x: 1\n")
    logger.log_artifact(tmp_path / "out" / "config.yaml")
    assert logger.close("finished", drain_timeout_s=1) == 5, "run, params, metrics, artifact, status: all unsent"
    assert record.run_id is None and logger.run_url is None
    assert not (tmp_path / "never.db").exists(), "offline mode must not create a store"
    entries, _ = read_entries(tracking_dir(tmp_path / "out") / "journal.jsonl")
    assert [e["op"] for e in entries] == ["run", "params", "metrics", "artifact", "status"]
    artifact = next(e for e in entries if e["op"] == "artifact")
    assert artifact["path"] == "config.yaml", "files in the output dir are recorded relative to it"


def test_a_resume_continues_the_run_without_a_step_twice(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    first = make(out, uri)
    record = first.open()
    assert f"/runs/{record.run_id}?" in first.run_url, "online: the run exists at start"
    for step in range(5):
        first.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    first.close("interrupted", drain_timeout_s=60)

    again = RunLogger(output_dir=out, tracking_uri=uri, experiment="logger", run_name="r",
                      params={"model.phi": "1", "optim.lr": "0.2"}, tags={"model": "efficientnet"})
    assert again.open().run_id == record.run_id and again.resumed
    for step in range(3, 8):  # steps 3 and 4 are the first attempt's
        again.log_metrics({"train/loss": 0.5}, step=step)
    assert again.close("finished", drain_timeout_s=60) == 0

    run = client(uri).get_run(record.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["optim.lr"] == "0.1", "params keep their first value"
    assert run.data.tags["changed_on_resume"] == "optim.lr" and run.data.tags["restarts"] == "1"
    steps = [m.step for m in client(uri).get_metric_history(record.run_id, "train/loss")]
    assert sorted(steps) == list(range(8)), steps
    assert RunRecord.load(tracking_dir(out)).restarts == 1


def test_a_run_dir_from_another_store_is_refused(tmp_path):
    out = tmp_path / "out"
    logger = make(out, f"sqlite:///{tmp_path / 'a.db'}")
    logger.open()
    logger.close("finished", drain_timeout_s=60)
    with pytest.raises(PhiscaleError, match="point tracking.uri at that store"):
        make(out, f"sqlite:///{tmp_path / 'b.db'}").open()


def test_an_unknown_mode_is_refused():
    with pytest.raises(PhiscaleError, match="tracking.mode='sometimes'"):
        RunLogger(output_dir="x", tracking_uri="sqlite:////x.db", experiment="e", run_name="r", params={},
                  tags={}, mode="sometimes")


def test_wait_sent_returns_once_the_store_holds_what_was_journaled(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = make(tmp_path / "out", uri, heartbeat_s=0)
    logger.open()
    logger.log_metrics({"rung/1/val/loss": 0.5}, step=7)
    assert logger.wait_sent(60), "the sender thread sends within the bound"
    assert client(uri).get_run(logger.run_id).data.metrics["rung/1/val/loss"] == 0.5, "readable by another process"
    logger.close("finished", drain_timeout_s=30)
    offline = make(tmp_path / "off", uri, mode="offline")
    offline.open()
    assert offline.wait_sent(5) is False, "offline: nothing is sent, and it says so at once"
    offline.close("finished", drain_timeout_s=1)


def test_a_held_logger_leaves_a_local_store_alone_until_training_has_begun(tmp_path, capsys):
    """A single-process run's first step does not wait for MLflow (SendFromFirstStep holds the sender)."""
    db = tmp_path / "mlflow.db"
    logger = make(tmp_path / "out", f"sqlite:///{db}", heartbeat_s=0)
    logger.hold_sending()
    record = logger.open()
    _ = logger.experiment  # Lightning reads it at set-up
    logger.log_metrics({"train/loss": 2.0}, step=1)
    assert record.run_id is None and not db.exists(), "held: nothing reaches the store, the journal keeps it"
    logger.start_sending()
    assert logger.wait_sent(60), "sent once started"
    assert f"phiscale: MLflow run {logger.run_url}" in capsys.readouterr().out, "its link, when the sender made it"
    assert logger.close("finished", drain_timeout_s=60) == 0
    assert client(f"sqlite:///{db}").get_run(record.run_id).data.metrics["train/loss"] == 2.0


def test_a_held_logger_that_never_started_still_sends_its_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = make(tmp_path / "out", uri, heartbeat_s=0)
    logger.hold_sending()
    record = logger.open()
    assert logger.close("failed", drain_timeout_s=60, error="RuntimeError: before the first step") == 0
    run = client(uri).get_run(record.run_id)
    assert run.info.status == "FAILED" and run.data.tags["phiscale.error"].startswith("RuntimeError")
