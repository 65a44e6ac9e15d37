"""Two-process gloo DDP training then `phiscale-eval`: one MLflow run, val metrics reduced exactly across ranks."""

from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient
from support.runs import BIN, TRAIN


@pytest.mark.slow
def test_ddp_two_processes_then_eval_agrees(fast_overrides, tmp_path):
    result = subprocess.run(
        [TRAIN, *fast_overrides, "trainer=ddp", "trainer.devices=2", "run_name=ddp"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("phiscale")
    (run,) = client.search_runs([experiment.experiment_id])  # one run, though two processes trained
    assert run.data.tags["world_size"] == "2"
    assert run.info.status == "FINISHED"
    assert f"rank 1/2 logs to MLflow run {run.info.run_id} via rank 0" in result.stdout, "rank 1 never learnt the run id"
    per_device = run.data.metrics["perf/images_per_s_per_device"]
    assert run.data.metrics["perf/images_per_s"] == pytest.approx(2 * per_device, rel=1e-6)

    val = client.get_metric_history(run.info.run_id, "val/top1")
    assert len(val) == 2
    best = max(val, key=lambda m: m.value)

    ckpt = tmp_path / "outputs" / "runs" / "phiscale" / "ddp" / "checkpoints" / "best.ckpt"
    result = subprocess.run([str(BIN / "phiscale-eval"), str(ckpt), "--num-workers", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "top-1" in result.stdout and run.info.run_id in result.stdout

    evaluated = client.get_run(run.info.run_id).data.metrics
    from phiscale.data import ensure_digits
    from phiscale.data.beton_file import check_beton

    assert evaluated["eval/images"] == check_beton(ensure_digits().val_beton).num_samples
    # Each rank saw half of the val set; the logged epoch metric must be the whole set's accuracy.
    assert evaluated["eval/top1"] == pytest.approx(best.value, abs=1e-6)
