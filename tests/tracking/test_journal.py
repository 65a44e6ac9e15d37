"""The journal: appends survive a restart, a torn last line is dropped, the cursor marks what was sent, and
an entry that does not fit on a real full disk (a small tmpfs) is cut off whole."""

from __future__ import annotations

import json

import pytest
from support.small_fs import fill, tmpfs

from phiscale.errors import DiskFull, PhiscaleError
from phiscale.tracking.journal import CURSOR, JOURNAL, Journal, RunRecord, read_entries


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


def test_a_full_disk_cuts_off_the_entry_that_did_not_fit_and_loses_nothing_journaled(tmp_path):
    # Before: a short write left a torn line, later entries went after it and were lost at the next open.
    with tmpfs(tmp_path / "small", "256k") as disk:
        journal = Journal(disk / "tracking")
        journal.append("run", experiment="phiscale", run_name="r", tags={}, start_ms=0)
        filler = fill(disk)
        step = 0
        with pytest.raises(DiskFull) as err:  # the journal's last page fills up, then no room at all
            for step in range(1000):
                journal.append("metrics", values=[["train/loss", 0.5, 1000, step], ["train/lr", 0.1, 1000, step]])
        journaled = step + 1  # the run entry, then the metrics of steps 0..step-1; the one of `step` did not fit
        said = str(err.value)
        assert said.startswith(f"the disk is full: appending to the run's journal in {disk}/tracking needed ")
        assert f"and 0 B is free; its {journaled} entries so far are kept whole; free space there" in said
        entries, size = read_entries(journal.path)
        assert size == journal.path.stat().st_size, "a torn line was left behind"
        assert [e["seq"] for e in entries] == list(range(journaled)) and journal.next_seq == journaled
        assert journal.last_step["train/loss"] == step - 1, "the entry that did not fit counts as not journaled"

        journal.ack(journaled - 1)  # the sender: the store has every entry on disk
        # A run's end (RunLogger.close): sent all the same, kept in memory; the file stays as it was.
        journal.append("tags", tags={"phiscale.error": "DiskFull: " + "x" * 500}, keep_if_full=True)
        status = journal.append("status", status="FAILED", keep_if_full=True)
        assert journal.pending[-1] is status and status["seq"] == journaled + 1
        assert read_entries(journal.path)[1] == size, "an entry kept in memory went into the file"
        with pytest.raises(PhiscaleError, match="took no entry since the disk was full"):
            journal.append("tags", tags={"late": "1"})
        filler.unlink()
        journal.ack(status["seq"])
        journal.close()
        assert json.loads((disk / "tracking" / CURSOR).read_text())["seq"] == journaled - 1, \
            "the cursor passed the file's last entry: the next start would skip its own first entry"

        again = Journal(disk / "tracking")
        assert again.next_seq == journaled and not again.pending
        again.append("status", status="RUNNING")
        assert [e["seq"] for e in read_entries(again.path)[0]] == list(range(journaled + 1))
        assert [e["seq"] for e in again.pending] == [journaled], "the restart's first entry is sent"
        again.close()
