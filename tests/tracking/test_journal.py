"""The journal: appends survive a restart, a torn last line is dropped, the cursor marks what was sent."""

from __future__ import annotations

import json

from phiscale.tracking.journal import CURSOR, JOURNAL, Journal, RunRecord


def test_entries_survive_a_restart_with_their_steps_params_and_backlog(tmp_path):
    journal = Journal(tmp_path)
    journal.append("params", params={"model.phi": "1"})
    journal.append("metrics", values=[["train/loss", 2.3, 1000, 0], ["train/lr", 0.1, 1000, 0]])
    journal.append("metrics", values=[["train/loss", 2.1, 2000, 5]])
    journal.ack(0)  # the store has the params entry
    journal.close()

    again = Journal(tmp_path)
    assert again.next_seq == 3 and again.sent_seq == 0
    assert [e["seq"] for e in again.pending] == [1, 2], "only what the store has not acknowledged is pending"
    assert again.last_step == {"train/loss": 5, "train/lr": 0}
    assert again.params == {"model.phi": "1"}


def test_a_torn_last_line_is_cut_off_before_new_appends(tmp_path):
    journal = Journal(tmp_path)
    journal.append("tags", tags={"a": "1"})
    journal.close()
    with open(tmp_path / JOURNAL, "a") as f:
        f.write('{"seq":1,"t":5,"op":"metr')  # a process killed mid-write
    again = Journal(tmp_path)
    assert again.next_seq == 1
    again.append("tags", tags={"b": "2"})
    again.close()
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    assert [json.loads(line)["tags"] for line in lines] == [{"a": "1"}, {"b": "2"}]


def test_sync_makes_appends_durable_and_ack_moves_the_cursor(tmp_path):
    journal = Journal(tmp_path)
    for step in range(3):
        journal.append("metrics", values=[["val/top1", 0.5, 1, step]])
    journal.sync()
    assert len((tmp_path / JOURNAL).read_text().splitlines()) == 3, "fsynced appends are in the file"
    journal.ack(2)
    assert journal.backlog == 0 and json.loads((tmp_path / CURSOR).read_text()) == {"seq": 2}


def test_a_damaged_cursor_means_replaying_not_losing(tmp_path):
    journal = Journal(tmp_path)
    journal.append("tags", tags={"a": "1"})
    journal.close()
    (tmp_path / CURSOR).write_text("not json")
    assert Journal(tmp_path).backlog == 1


def test_the_run_record_round_trips_and_keeps_its_key(tmp_path):
    record = RunRecord.new("sqlite:////x.db", "phiscale", "efficientnet-phi1")
    record.save(tmp_path)
    loaded = RunRecord.load(tmp_path)
    assert loaded == record and len(record.run_key) == 32 and loaded.run_id is None
    assert RunRecord.load(tmp_path / "nowhere") is None
