"""A full disk ends a run in one line that says what to do, and nothing is lost (issue 34).

One run on a real small file system (a tmpfs the test mounts): `phiscale-train` with the output dir on
8 MiB, where its third checkpoint write does not fit (a checkpoint is ~3.3 MiB, and a new last.ckpt is
written beside the old one and best.ckpt); then, on a grown disk that something else fills, the same
run resumed until its journal does not fit; then, the space freed, the same command finishes the same
MLflow run with no step twice.
"""

from __future__ import annotations

import json
import signal
import subprocess

import lightning.pytorch as L
import pytest
from mlflow.tracking import MlflowClient
from support.runs import FAST, TRAIN
from support.small_fs import fill, resize, tmpfs

from phiscale.config import compose_config
from phiscale.errors import DiskFull
from phiscale.tracking.journal import JOURNAL, read_entries, tracking_dir
from phiscale.train.checkpoint_io import checkpoint_step
from phiscale.train.run import run_training

pytestmark = pytest.mark.slow


class FillTheDisk(L.Callback):
    """At the second epoch's start: another job takes every free byte, and the journal's last page
    fills (tmpfs hands out whole pages) with tags entries until one does not fit."""

    def __init__(self, directory) -> None:
        self.directory, self.padding = directory, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != 1:
            return
        self.filler = fill(self.directory)
        journal = trainer.logger.journal
        with pytest.raises(DiskFull):
            while True:
                journal.append("tags", tags={"test.padding": str(self.padding)})
                self.padding += 1


def test_a_full_disk_ends_in_one_line_and_the_same_command_resumes_the_run(tmp_path):
    with tmpfs(tmp_path / "scratch", "8m") as disk:
        out = disk / "run"
        ckpts = out / "checkpoints"
        command = [*FAST, f"paths.output_dir={out}", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]

        # 1. A checkpoint does not fit: one line on stderr; both checkpoints whole; the run FAILED.
        first = subprocess.run([TRAIN, *command], capture_output=True, text=True, timeout=600)
        lines = first.stderr.strip().splitlines()
        assert first.returncode == 2 and len(lines) == 1, first.stderr[-3000:]
        assert lines[0].startswith(f"phiscale-train: error: the disk is full: writing last.ckpt in {ckpts} needed "
                                   "3.3 MiB and "), lines
        assert lines[0].endswith("is free; this run's checkpoints need 10.0 MiB there (last.ckpt, its temporary and "
                                 "best.ckpt, 3.3 MiB each); the last complete checkpoint, best.ckpt (step 6), is kept; "
                                 "free space there, or move the output dir to a larger disk and point paths.output_dir "
                                 "at it; then run the same command again: it resumes the same MLflow run from that "
                                 "checkpoint"), lines
        assert f"phiscale: warning: {ckpts} has " in first.stdout, "no warning before the first step"
        assert (checkpoint_step(ckpts / "last.ckpt"), checkpoint_step(ckpts / "best.ckpt")) == (4, 6)
        assert sorted(p.name for p in ckpts.iterdir()) == ["best.ckpt", "last.ckpt"], "a temporary was left"
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
        assert run.info.status == "FAILED" and run.data.tags["phiscale.error"].startswith("the disk is full")
        summary = (out / "summary.json").read_text()
        assert json.loads(summary)["status"] == "failed"

        # 2. A grown disk that another job fills: the journal does not fit; what it holds stays whole.
        resize(disk, "64m")
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
        filling = FillTheDisk(disk)
        try:
            with pytest.raises(DiskFull) as err:  # the resume's last.ckpt (step 6), then no checkpoint until after a log
                run_training(compose_config([*command, "trainer.ckpt_every_n_steps=1000"]), extra_callbacks=[filling])
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        said = str(err.value)
        assert said.startswith(f"the disk is full: appending to the run's journal in {out / 'tracking'} needed ")
        assert "and 0 B is free; its " in said and ("entries so far are kept whole; the last complete checkpoint, "
                                                    "last.ckpt (step 6), is kept; free space there") in said, said
        entries, size = read_entries(tracking_dir(out) / JOURNAL)
        assert size == (tracking_dir(out) / JOURNAL).stat().st_size, "a torn line was left in the journal"
        assert [e["seq"] for e in entries] == list(range(len(entries)))
        assert sum(e["op"] == "tags" and "test.padding" in e["tags"] for e in entries) == filling.padding
        assert (out / "summary.json").read_text() == summary, "summary.json was cut short, not kept"
        assert client.get_run(run.info.run_id).info.status == "FAILED", "the end was not sent"

        # 3. Space freed: the same command finishes the same MLflow run, no step twice.
        filling.filler.unlink()
        last = subprocess.run([TRAIN, *command], capture_output=True, text=True, timeout=600)
        assert last.returncode == 0 and "error" not in last.stderr, last.stderr[-3000:]
        assert f"resuming {run.info.run_id} from {ckpts / 'last.ckpt'} (restart 2)" in last.stdout
        (after,) = client.search_runs([run.info.experiment_id])
        assert (after.info.run_id, after.info.status) == (run.info.run_id, "FINISHED")
        for key in ("train/loss", "val/top1", "val/top1_best"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == sorted(set(steps)), f"{key} steps repeat or go back: {steps}"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 3, 5, 7, 9, 11]
        assert len(client.get_metric_history(run.info.run_id, "val/top1")) == 2, "one val/top1 per epoch"
        assert json.loads((out / "summary.json").read_text())["status"] == "finished"
