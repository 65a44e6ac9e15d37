"""phiscale-sync: an offline run arrives later looking like an online one; lost runs are reaped."""

from __future__ import annotations

import json
import time

from phiscale.tracking import RunLogger, client, find_output_dirs, is_lost, reap, sync_output_dir
from phiscale.tracking.journal import Journal, RunRecord, read_entries, tracking_dir
from phiscale.tracking.logger import HEARTBEAT_S_TAG, OUTPUT_DIR_TAG
from phiscale.tracking.sender import HEARTBEAT_TAG, Sender
from phiscale.tracking.sync import REAPED_TAG


def offline_run(out, uri) -> None:
    logger = RunLogger(output_dir=out, tracking_uri=uri, experiment="sync", run_name="offline",
                       params={"seed": "0"}, tags={"model": "mobilenet_v2"}, mode="offline")
    logger.open()
    for step in range(10):
        logger.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    logger.close("finished", drain_timeout_s=0)


def test_an_offline_run_synced_later_keeps_its_own_times_and_history(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "runs" / "a"
    offline_run(out, uri)
    entries, _ = read_entries(tracking_dir(out) / "journal.jsonl")
    time.sleep(0.01)  # the sync happens strictly later than the run's end
    result = sync_output_dir(out, log=lambda m: None)
    assert result.left == 0 and result.sent_metrics == 10

    run = client(uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "offline"
    assert run.info.start_time == entries[0]["start_ms"], "the run started when training did, not at sync"
    assert run.info.end_time == entries[-1]["t"], "and ended when training did"
    assert run.data.params == {"seed": "0"} and run.data.tags[OUTPUT_DIR_TAG] == str(out)
    assert [m.step for m in client(uri).get_metric_history(result.run_id, "train/loss")] == list(range(10))

    again = sync_output_dir(out, log=lambda m: None)
    assert (again.sent_entries, again.left, again.run_id) == (0, 0, result.run_id)
    assert list(find_output_dirs(tmp_path / "runs")) == [out]


def test_a_journal_held_by_a_live_sender_is_skipped(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "a"
    offline_run(out, uri)
    live = Sender(Journal(tracking_dir(out)), RunRecord.load(tracking_dir(out)), uri, output_dir=out)
    assert live.acquire() is None
    try:
        result = sync_output_dir(out, log=lambda m: None)
        assert result.skipped and "is sending it now" in result.skipped and result.sent_entries == 0
    finally:
        live.release()


def test_lost_runs_are_reaped_unless_their_output_dir_resumed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = client(uri)
    experiment_id = mlflow.create_experiment("reap")
    now = time.time()
    resumed_dir = tmp_path / "resumed"
    Journal(tracking_dir(resumed_dir)).append("status", status="RUNNING")  # reopened after the last beat
    dying_dir = tmp_path / "dying"  # journaled after its last heartbeat (60 s ago), then silence (40 s)
    tracking_dir(dying_dir).mkdir(parents=True)
    (tracking_dir(dying_dir) / "journal.jsonl").write_text(
        json.dumps({"seq": 0, "t": int((now - 40) * 1000), "op": "tags", "tags": {"late": "1"}}) + "\n")

    def running(name, beat_age_s, output_dir):
        tags = {HEARTBEAT_TAG: str(int(now - beat_age_s)), HEARTBEAT_S_TAG: "2", OUTPUT_DIR_TAG: str(output_dir)}
        return mlflow.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    dead = running("dead", 60, dying_dir)
    fresh = running("fresh", 1, tmp_path / "gone")
    resumed = running("resumed", 60, resumed_dir)
    tags_of = {r: mlflow.get_run(r).data.tags for r in (dead, fresh)}
    assert is_lost("RUNNING", tags_of[dead], None, now) and not is_lost("RUNNING", tags_of[fresh], None, now)
    assert not is_lost("FINISHED", tags_of[dead], None, now)

    actions = {r.run_name: r.action for r in reap("reap", uri, now_s=now)}
    assert actions == {"dead": "killed", "resumed": "alive"}
    assert mlflow.get_run(dead).info.status == "KILLED"
    assert "no heartbeat since" in mlflow.get_run(dead).data.tags[REAPED_TAG]
    assert mlflow.get_run(fresh).info.status == "RUNNING" and mlflow.get_run(resumed).info.status == "RUNNING"
