"""Bad configs fail before any training work, with one line naming the value and the fix."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from phiscale.errors import PhiscaleError
from phiscale.train.run import run_training

TRAIN = str(Path(sys.executable).with_name("phiscale-train"))


def test_deepspeed_on_cpu_is_refused(fast_cfg):
    with pytest.raises(PhiscaleError, match="DeepSpeed on CUDA GPUs only"):
        run_training(fast_cfg("trainer=deepspeed", "trainer.accelerator=cpu"))


def test_gpu_without_cuda_is_refused(fast_cfg):
    with pytest.raises(PhiscaleError, match="no CUDA device"):
        run_training(fast_cfg("trainer=gpu"))


def test_more_cpu_processes_than_cores_is_refused(fast_cfg):
    with pytest.raises(PhiscaleError, match="trainer.devices=512"):
        run_training(fast_cfg("trainer=ddp", "trainer.devices=512"))


def test_unreachable_tracking_server_fails_fast_with_the_uri(fast_cfg, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    start = time.monotonic()
    with pytest.raises(PhiscaleError, match=uri):
        run_training(fast_cfg(f"tracking.uri={uri}", "tracking.connect_timeout_s=2"))
    assert time.monotonic() - start < 60, "gave up long after tracking.connect_timeout_s (MLflow's own retries?)"
    assert not (tmp_path / "outputs" / "runs").exists() or not any((tmp_path / "outputs" / "runs").rglob("*.ckpt"))


def test_unknown_option_prints_hydras_choices():
    result = subprocess.run([TRAIN, "model=resnet50"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "efficientnet_b0" in result.stderr and "mobilenet_v3_small" in result.stderr


def test_help_lists_the_config_groups():
    result = subprocess.run([TRAIN, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for group in ("model:", "data:", "trainer:", "optim:", "tracking:"):
        assert group in result.stdout


@pytest.mark.slow
def test_nonfinite_loss_stops_with_a_checkpoint_and_one_line(fast_overrides, tmp_path):
    result = subprocess.run(
        [TRAIN, *fast_overrides, "optim.lr_per_256=1e12", "optim.warmup_epochs=0", "run_name=nonfinite"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("phiscale-train: error: loss became non-finite (nan/inf) by step"), last_line
    assert "Traceback" not in result.stderr
    ckpt_dir = tmp_path / "outputs" / "runs" / "phiscale" / "nonfinite" / "checkpoints"
    assert list(ckpt_dir.glob("nonfinite-step*.ckpt")), f"no checkpoint in {ckpt_dir}"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    assert run.info.status == "FAILED"
