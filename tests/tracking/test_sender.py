"""The sender against a real MLflow store: everything arrives once, replays store nothing twice, a
lost `create_run` reply finds its run again, refusals are kept, and an outage is one log line."""

from __future__ import annotations

import json

import pytest

from phiscale.server.process import free_port
from phiscale.tracking import client
from phiscale.tracking.journal import REJECTED, Journal, RunRecord, now_ms
from phiscale.tracking.sender import HEARTBEAT_TAG, RUN_KEY_TAG, Sender


def fill(journal: Journal, artifact) -> None:
    journal.append("run", experiment="sender", run_name="r", tags={"model": "efficientnet"}, start_ms=now_ms() - 5000)
    journal.append("params", params={f"p{i}": str(i) for i in range(250)})  # three log_batch calls
    for step in range(25):
        journal.append("metrics", values=[[f"m{k}", float(step * k), now_ms(), step] for k in range(100)])
    journal.append("artifact", path=artifact.name, artifact_path="files")
    journal.append("tags", tags={"restarts": "0"})
    journal.append("status", status="FINISHED")


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_journal_arrives_whole_and_a_replay_stores_nothing_twice(tmp_path, store):
    out = tmp_path / "run"
    (out / "tracking").mkdir(parents=True)
    artifact = out / "config.yaml"
    artifact.write_text("model: efficientnet\n")
    journal = Journal(out / "tracking")
    fill(journal, artifact)
    record = RunRecord.new(store, "sender", "r")
    sender = Sender(journal, record, store, output_dir=out, heartbeat_s=None, log=lambda m: None)
    assert sender.send_all(timeout_s=60) == 0
    assert sender.sent_metrics == 2500

    mlflow = client(store)
    run = mlflow.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.tags[RUN_KEY_TAG] == record.run_key and run.data.tags["restarts"] == "0"
    assert len(run.data.params) == 250
    assert [m.step for m in mlflow.get_metric_history(record.run_id, "m7")] == list(range(25))
    assert [a.path for a in mlflow.list_artifacts(record.run_id, "files")] == ["files/config.yaml"]

    # The whole journal again, as after a crash that lost the cursor and the record's run id.
    journal.close()
    (out / "tracking" / "sent.json").unlink()
    replay = Journal(out / "tracking")
    assert replay.backlog == journal.next_seq
    lost_reply = RunRecord(record.run_key, store, "sender", "r")  # no run id: the create's reply was lost
    Sender(replay, lost_reply, store, output_dir=out, heartbeat_s=None, log=lambda m: None).send_all(60)
    assert lost_reply.run_id == record.run_id, "the run was found again by its key, not created twice"
    assert len(mlflow.search_runs([run.info.experiment_id])) == 1
    assert [m.step for m in mlflow.get_metric_history(record.run_id, "m7")] == list(range(25))


def test_an_entry_the_store_refuses_is_kept_and_the_rest_is_sent(tmp_path, store):
    out = tmp_path / "run"
    journal = Journal(out / "tracking")
    journal.append("run", experiment="sender", run_name="r", tags={}, start_ms=now_ms())
    journal.append("params", params={"lr": "0.1"})
    journal.append("params", params={"lr": "0.2"})  # MLflow refuses to change a param
    journal.append("metrics", values=[["loss", 1.0, now_ms(), 0]])
    record = RunRecord.new(store, "sender", "r")
    lines = []
    sender = Sender(journal, record, store, output_dir=out, heartbeat_s=None, log=lines.append)
    assert sender.send_all(timeout_s=60) == 0
    run = client(store).get_run(record.run_id)
    assert run.data.params == {"lr": "0.1"} and run.data.metrics == {"loss": 1.0}
    (rejected,) = [json.loads(line) for line in (out / "tracking" / REJECTED).read_text().splitlines()]
    assert rejected["entry"]["params"] == {"lr": "0.2"}
    assert len(lines) == 1 and "refused a `params` entry" in lines[0]


def test_an_unreachable_store_is_one_log_line_and_keeps_the_backlog(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{free_port()}"
    journal = Journal(tmp_path / "tracking")
    journal.append("run", experiment="sender", run_name="r", tags={}, start_ms=now_ms())
    journal.append("metrics", values=[["loss", 1.0, now_ms(), 0]])
    lines = []
    sender = Sender(journal, RunRecord.new(uri, "sender", "r"), uri, output_dir=tmp_path, heartbeat_s=None,
                    log=lines.append)
    assert [sender.send_some() for _ in range(3)] == [False, False, False]
    assert journal.backlog == 2 and journal.sent_seq == -1
    assert len(lines) == 1 and "unreachable" in lines[0] and "journaling to" in lines[0], lines


def test_only_one_process_sends_a_journal(tmp_path, store):
    journal = Journal(tmp_path / "tracking")
    first = Sender(journal, RunRecord.new(store, "e", "r"), store, output_dir=tmp_path, heartbeat_s=None)
    second = Sender(journal, RunRecord.new(store, "e", "r"), store, output_dir=tmp_path, heartbeat_s=None)
    assert first.acquire() is None
    assert second.acquire() is not None, "the journal's lock is held"
    first.release()
    assert second.acquire() is None
    second.release()


def test_the_heartbeat_tag_is_written_by_the_background_sender(tmp_path, store):
    journal = Journal(tmp_path / "tracking")
    journal.append("run", experiment="beat", run_name="r", tags={}, start_ms=now_ms())
    record = RunRecord.new(store, "beat", "r")
    sender = Sender(journal, record, store, output_dir=tmp_path, heartbeat_s=0.2, log=lambda m: None)
    sender.acquire()
    sender.start()
    try:
        import time

        deadline = time.monotonic() + 60
        beat = None
        while time.monotonic() < deadline and beat is None:
            if record.run_id:
                beat = client(store).get_run(record.run_id).data.tags.get(HEARTBEAT_TAG)
            time.sleep(0.1)
        assert beat is not None and abs(float(beat) - time.time()) < 60
    finally:
        assert sender.stop(30) == 0
