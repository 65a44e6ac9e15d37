"""phiscale-eval's and phiscale-report's writes: into the checkpoint's run or a new one; a report
run holds its files, and is FAILED when an upload fails."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from phiscale.tracking.writes import log_evaluation, log_report_run


def test_evaluation_goes_into_the_given_run_or_a_new_finished_one(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    new = log_evaluation(uri, {"eval/top1": 0.9}, step=7, experiment="writes", run_name="eval-x", tags={"k": "v"})
    client = MlflowClient(uri)
    run = client.get_run(new)
    assert run.info.status == "FINISHED" and run.info.run_name == "eval-x" and run.data.tags["k"] == "v"
    assert [(m.step, m.value) for m in client.get_metric_history(new, "eval/top1")] == [(7, 0.9)]
    same = log_evaluation(uri, {"eval/top1": 0.95}, step=9, run_id=new)
    assert same == new and len(client.get_metric_history(new, "eval/top1")) == 2


def test_a_report_run_holds_its_files_and_fails_visibly(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("writes", artifact_location=(tmp_path / "art").as_uri())
    page = tmp_path / "report.md"
    page.write_text("# report\n")
    run_id = log_report_run(uri, experiment_id, [page], run_name="report", tags={"phiscale.report": "true"})
    assert client.get_run(run_id).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id)] == ["report.md"]
    with pytest.raises(Exception):  # noqa: B017 (whatever MLflow raises for a missing file)
        log_report_run(uri, experiment_id, [tmp_path / "missing.png"], run_name="report", tags={})
    failed = [r for r in client.search_runs([experiment_id]) if r.info.run_id != run_id]
    assert [r.info.status for r in failed] == ["FAILED"]
