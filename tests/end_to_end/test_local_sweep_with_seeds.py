"""A recorded sweep trained here (`phiscale-sweep submit --local --register`): 2 points × 3 seeds, real
training, one parent run with 6 children, each a version of one registered model whose `best` is the winner; then `phiscale-report --sweep`: 2 rows, mean ± std over the seeds,
error bars in the plots; `status` and `resume` agree that the sweep is complete."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from support import background

from phiscale.report.plots import PLOT_TOP1_VS_MACS
from phiscale.report.tables import CSV_NAME, MARKDOWN_NAME

SWEEP = """name: seeded
description: two widths, three seeds each
base: [experiment=digits_demo, run_name=null, data.min_crop_scale=0.8, optim.lr_per_256=0.8]
grid:
  model.width_mult: [0.5, 1.0]
seeds: [0, 1, 2]
"""
# Three epochs of the digits recipe (66 steps): past chance, with seeds that differ (measured at width
# 0.5: 0.84, 0.76, 0.71 best val top-1), little enough for six runs in a couple of minutes.
STEPS = ["trainer.max_epochs=3", "trainer.log_every_n_steps=5", "trainer.progress_bar=false", "data.num_workers=1"]


def sweep_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phiscale.cli.sweep", *args], capture_output=True, text=True,
                          timeout=timeout)


def store(root) -> list[str]:
    return [f"paths.root={root}/out", f"tracking.uri=sqlite:///{root}/mlflow.db", "tracking.experiment=seeded"]


@background.job("seeded-sweep")
def submit_the_sweep(root) -> tuple[list[str], dict[str, str]]:
    """The six runs: started with the session, in the cores' idle time (support/background.py)."""
    (root / "seeded.yaml").write_text(SWEEP)
    return [sys.executable, "-m", "phiscale.cli.sweep", "submit", str(root / "seeded.yaml"), *STEPS, *store(root),
            "--local", "--register", "seeded-net"], {}


@pytest.mark.slow
@pytest.mark.background("seeded-sweep")
def test_a_local_sweep_with_seeds_and_its_report(request):
    done = background.result(request.config, "seeded-sweep")
    tmp_path, uri = done.dir, f"sqlite:///{done.dir}/mlflow.db"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_id = done.stdout.split()[1].rstrip(":")
    assert f"sweep {sweep_id}: 6 finished; parent run FINISHED" in done.stdout

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("seeded")
    runs = client.search_runs([experiment.experiment_id], f"tags.`phiscale.sweep_id` = '{sweep_id}'")
    parent = next(r for r in runs if r.info.run_name == sweep_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert sorted((r.data.tags["sweep_point"], r.data.tags["seed"]) for r in children) == [
        (p, s) for p in "01" for s in "012"]
    assert all(r.info.status == "FINISHED" for r in children)
    # --register: every run is a version of seeded-net, and models:/seeded-net@best is the sweep's winner
    versions = client.search_model_versions("name = 'seeded-net'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in children)
    best = client.get_model_version_by_alias("seeded-net", "best")
    top1 = {r.info.run_id: r.data.metrics["val/top1_best"] for r in children}
    assert top1[best.run_id] == max(top1.values()), f"best is {top1[best.run_id]}, the winner {max(top1.values())}"
    twin = client.get_model_version_by_alias("seeded-net-images", "best")  # image files in: the same run's network
    assert twin.run_id == best.run_id and twin.tags["phiscale.twin_model_id"] == best.source.removeprefix("models:/")

    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "phiscale.cli.report", "--sweep", "seeded", "--root",
                             f"{tmp_path}/out", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"2 rows (6 runs) in sweep {sweep_id}" in report.stdout and report.stdout.count("seeds 0,1,2") == 2
    with open(out / CSV_NAME) as f:
        rows = list(csv.DictReader(f))
    assert [(r["width_mult"], r["runs"], r["seeds"], r["state"]) for r in rows] == [
        ("0.5", "3", "0,1,2", "finished"), ("1.0", "3", "0,1,2", "finished")]
    by_seed = {}
    for child in children:
        by_seed.setdefault(child.data.tags["sweep_point"], []).append(child.data.metrics["val/top1_best"])
    for row, point in zip(rows, "01", strict=True):
        values = by_seed[point]
        mean = sum(values) / 3
        std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
        assert float(row["top1_mean"]) == pytest.approx(mean) and float(row["top1_std"]) == pytest.approx(std)
        assert mean > 0.2 and std > 0, f"the runs learnt, each seed its own way: {values}"
        assert float(row["images_per_s_mean"]) > 0 and row["images_per_s_std"] != ""
    markdown = (out / MARKDOWN_NAME).read_text()
    assert markdown.count(" ± ") >= 4 and "| state |" in markdown
    assert (out / PLOT_TOP1_VS_MACS).stat().st_size > 10_000

    status = sweep_cli("status", sweep_id, "--root", f"{tmp_path}/out")
    assert status.returncode == 0 and status.stdout.strip().splitlines()[-1] == "finished 6", status.stdout
    resume = sweep_cli("resume", "seeded", "--root", f"{tmp_path}/out")
    assert resume.returncode == 0 and "is complete: all 6 runs finished; nothing to resume" in resume.stdout
    background.passed(request.config, "seeded-sweep")
