"""phiscale-sync's command line: arguments, and a real offline run sent through it."""

from __future__ import annotations

import subprocess

from mlflow.tracking import MlflowClient
from support.runs import SYNC

from phiscale.tracking import RunLogger


def run_sync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([SYNC, *args], capture_output=True, text=True, timeout=300)


def test_nothing_to_do_is_a_usage_error():
    result = run_sync()
    assert result.returncode == 2 and "give OUTPUT_DIR(s), --all ROOT or --reap EXPERIMENT" in result.stderr


def test_a_dir_without_a_journal_is_one_line(tmp_path):
    result = run_sync(str(tmp_path))
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert "holds no phiscale journal" in line and str(tmp_path) in line
    assert "no run journals" in run_sync("--all", str(tmp_path)).stderr


def test_all_sends_every_offline_run_under_a_root(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name in ("a", "b"):
        logger = RunLogger(output_dir=tmp_path / "runs" / name, tracking_uri=uri, experiment="cli-sync",
                           run_name=name, params={}, tags={}, mode="offline")
        logger.open()
        logger.log_metrics({"train/loss": 1.0}, step=0)
        logger.close("finished", drain_timeout_s=0)
    result = run_sync("--all", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("; complete") == 2, result.stdout
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cli-sync").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["a", "b"] and {r.info.status for r in runs} == {"FINISHED"}
