"""run_training: a short real run on digits is one MLflow run holding the params, tags, metrics
and artifacts the tracking contract promises (docs/ARCHITECTURE.md, "MLflow schema"); bad configs
and an unreachable store fail before any training work; a non-finite loss ends the run in one line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from support.runs import TRAIN

from phiscale.errors import PhiscaleError
from phiscale.train.run import run_training

PER_STEP = ["train/loss", "train/lr", "perf/images_per_s", "perf/images_per_s_per_device",
            "perf/step_time_s", "perf/data_wait_frac", "perf/peak_memory_mb"]
PER_EPOCH = ["val/loss", "val/top1", "val/top5", "val/top1_best", "val_ema/top1", "val_ema/top5"]
ONCE = ["model/params", "model/macs_train", "model/macs_eval", "model/flops_train", "model/flops_eval",
        "model/activation_mb", "train/resolution", "eval/resolution", "run/restarts"]


@pytest.mark.slow
def test_short_run_is_one_complete_mlflow_run(fast_cfg, tmp_path):
    cfg = fast_cfg("optim.ema_decay=0.99", "run_name=smoke", "tracking.system_metrics_s=0.5")
    summary = run_training(cfg)

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("phiscale")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, f"expected one run, found {[r.info.run_name for r in runs]}"
    run = runs[0]
    assert run.info.run_id == summary["run_id"]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "smoke"

    params = run.data.params
    assert params["model.name"] == "mobilenet_v3_small"
    assert params["model.width_mult"] == "0.5"
    assert params["data.name"] == "digits"
    assert params["trainer.max_epochs"] == "2"

    tags = run.data.tags
    assert tags["model"] == "mobilenet_v3_small" and tags["family"].startswith("mobilenet")
    assert tags["width_mult"] == "0.5"
    assert tags["world_size"] == "1"
    assert len(tags["git_commit"]) >= 7 and tags["host"]
    # What MLflow's UI reads: the training (not GenAI) view, the Source column, the description.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.source.name"] == Path(sys.argv[0]).name and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == tags["git_commit"] and tags["mlflow.user"]
    assert "mobilenet_v3_small" in tags["mlflow.note.content"] and "on digits" in tags["mlflow.note.content"]
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"digits-train", "digits-val"}, inputs
    assert {t.key: t.value for t in inputs["digits-train"].tags} == {"mlflow.data.context": "training"}
    assert '"num_samples": 1438' in inputs["digits-train"].dataset.profile and len(inputs["digits-val"].dataset.digest) == 16
    system = [k for k in run.data.metrics if k.startswith("system/")]
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/disk_usage_percentage", "system/network_receive_megabytes"} <= set(system), system

    missing = [k for k in PER_STEP + PER_EPOCH + ONCE if k not in run.data.metrics]
    assert not missing, f"metrics missing from the run: {missing}"
    assert run.data.metrics["model/params"] > 1e5
    assert run.data.metrics["model/flops_train"] == 2 * run.data.metrics["model/macs_train"]
    assert run.data.metrics["train/resolution"] == 32  # 224 native * 32 base / 224

    val = client.get_metric_history(run.info.run_id, "val/top1")
    assert len(val) == 2, "one val/top1 per epoch"
    assert all(0.0 <= m.value <= 1.0 for m in val)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == sorted(set(steps)) and steps[-1] >= summary["global_step"] - 2

    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri()), "artifacts belong beside the store"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    assert summary["status"] == "finished" and summary["epoch"] == 2


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


@pytest.mark.slow
def test_nonfinite_loss_stops_with_one_line_naming_the_last_good_checkpoint(fast_overrides, tmp_path):
    result = subprocess.run(
        [TRAIN, *fast_overrides, "optim.lr_per_256=1e12", "optim.warmup_epochs=0", "run_name=nonfinite"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("phiscale-train: error: loss became non-finite (nan/inf) by step"), last_line
    assert "Traceback" not in result.stderr
    assert "last.ckpt holds the last good state" in last_line, last_line
    ckpt_dir = tmp_path / "outputs" / "runs" / "phiscale" / "nonfinite" / "checkpoints"
    if (ckpt_dir / "last.ckpt").exists():
        state = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    assert run.info.status == "FAILED"


def test_a_full_disk_anywhere_in_a_run_names_the_kept_checkpoint_and_the_same_command(fast_cfg, tmp_path):
    from support.small_fs import fill, tmpfs

    from phiscale.train.plan import make_plan
    from phiscale.train.run import disk_full_of_run

    with tmpfs(tmp_path / "scratch", "1m") as disk:
        plan = make_plan(fast_cfg(f"paths.output_dir={disk}/run"))
        assert disk_full_of_run(RuntimeError("a bug"), plan) is None
        plan.ckpt_dir.mkdir(parents=True)
        fill(disk)
        with pytest.raises(OSError) as err:
            (plan.output_dir / "config.yaml").write_text("x" * 100_000)  # not through write_atomically
        assert disk_full_of_run(err.value, plan).args[0] == (
            f"the disk is full: writing the run's output in {plan.output_dir} did not fit (0 B free); no checkpoint "
            "was written yet; free space there, or move the output dir to a larger disk and point paths.output_dir "
            "at it; then run the same command again: it starts over in the same MLflow run")
        for path in (disk / "filler", plan.output_dir / "config.yaml"):
            path.unlink()
        torch.save({"state_dict": {}, "global_step": 12}, plan.ckpt_dir / "best.ckpt")
        torch.save({"state_dict": {}, "global_step": 8}, plan.ckpt_dir / "last.ckpt")
        assert str(disk_full_of_run(err.value, plan)).endswith(
            "; the last complete checkpoint, best.ckpt (step 12), is kept; free space there, or move the output dir "
            "to a larger disk and point paths.output_dir at it; then run the same command again: it resumes the same "
            "MLflow run from that checkpoint")
