"""SIGKILL mid-training, start again with the same output dir: one MLflow run continues.

Checks the promise of docs/ARCHITECTURE.md: no second run, strictly increasing steps with no
duplicates, the requested number of epochs, and the resumed weights are the checkpoint's.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from mlflow.tracking import MlflowClient
from support.runs import TRAIN, metric_points, wait_for

from phiscale.config import compose_config
from phiscale.train.run import run_training

EPOCHS = 5


class CaptureStartWeights(L.Callback):
    """Records the weights the resumed run starts from (after Lightning restored them)."""

    def on_train_start(self, trainer, pl_module):
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def wait_for_checkpoint(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    wait_for(lambda: path.exists() or proc.poll() is not None, timeout, f"{path} written")
    assert path.exists(), f"training exited ({proc.returncode}) before writing {path}:\n{proc.stderr.read()[-3000:]}"


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_run(fast_overrides, tmp_path):
    overrides = [*fast_overrides, f"trainer.max_epochs={EPOCHS}", "run_name=resume", "optim.ema_decay=0.99"]
    ckpt = tmp_path / "outputs" / "runs" / "phiscale" / "resume" / "checkpoints" / "last.ckpt"

    proc = subprocess.Popen([TRAIN, *overrides], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(ckpt, proc)  # step 4 of 30
        ckpt_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
        # Kill once training has journaled steps past the checkpoint: those stay in the run's history,
        # and the resumed run must not log them twice.
        wait_for(lambda: any(step > ckpt_step for step, _ in metric_points(ckpt.parent.parent)), 300,
                 "train/loss journaled past the checkpoint")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the first attempt finished before it could be killed"

    saved = torch.load(ckpt, map_location="cpu", weights_only=False)  # read before the resume overwrites it
    capture = CaptureStartWeights()
    summary = run_training(compose_config(overrides), extra_callbacks=[capture])

    # The resumed weights (model and EMA) are exactly the checkpoint's.
    for key, value in saved["state_dict"].items():
        assert torch.equal(capture.state[key], value), f"resumed weight {key} differs from the checkpoint"

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    assert len(runs) == 1, f"resume made a second run: {[r.info.run_name for r in runs]}"
    run = runs[0]
    assert run.info.run_id == summary["run_id"] and run.info.status == "FINISHED"
    for key in ("train/loss", "train/lr", "val/top1", "perf/images_per_s"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == sorted(steps) and len(steps) == len(set(steps)), f"{key} steps repeat or go back: {steps}"
    epochs = client.get_metric_history(run.info.run_id, "val/top1")
    assert len(epochs) == EPOCHS, f"expected {EPOCHS} val epochs, got {len(epochs)}"
    assert summary["epoch"] == EPOCHS and summary["restarts"] == 1
    assert run.data.metrics["run/restarts"] == 1
    assert run.data.tags["restarts"] == "1"


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_and_stops_cleanly(fast_overrides, tmp_path):
    overrides = [*fast_overrides, f"trainer.max_epochs={EPOCHS}", "run_name=sigterm"]
    out = tmp_path / "outputs" / "runs" / "phiscale" / "sigterm"
    proc = subprocess.Popen([TRAIN, *overrides], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(out / "checkpoints" / "last.ckpt", proc)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "received SIGTERM" in stdout + stderr
    assert "run interrupted" in stdout

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    assert run.info.status == "KILLED"
    stopped_at = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"]
    assert 0 < stopped_at < EPOCHS * 6

    summary = run_training(compose_config(overrides))  # the same command again finishes the run
    assert summary["status"] == "finished" and summary["run_id"] == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_progressive_resizing_ramps_the_train_resolution(fast_cfg, tmp_path):
    summary = run_training(fast_cfg("progressive.enabled=true", "progressive.min_ratio=0.5", "progressive.start=0",
                                    "progressive.end=0.7", "trainer.max_epochs=3", "train_resolution=64",
                                    "trainer.limit_train_batches=3"))
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(summary["run_id"], "train/resolution")
    ramp = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert ramp[0] == 64, "logged once at start: the final train resolution"
    assert ramp[1:] == sorted(ramp[1:]) and ramp[1] == 32 and ramp[-1] == 64, ramp
