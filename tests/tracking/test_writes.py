"""phiscale-eval's and phiscale-report's writes: into the checkpoint's run or a new one; a report
run holds its files, and is FAILED when an upload fails; a sweep's parent run, its tags and status."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from phiscale.tracking.writes import (
    create_parent_run,
    log_evaluation,
    log_report_run,
    set_run_status,
    tag_run,
)


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


def test_a_sweeps_parent_run_is_created_tagged_and_moved_between_statuses(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id, run_id = create_parent_run(uri, "sweeps", run_name="phi-20261128-1a2b",
                                              tags={"phiscale.sweep": "phi", "long": "x" * 9000}, note="the *note*")
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.experiment_id == experiment_id and run.info.run_name == "phi-20261128-1a2b"
    assert run.info.status == "RUNNING" and run.data.tags["mlflow.note.content"] == "the *note*"
    assert run.data.tags["phiscale.sweep"] == "phi" and len(run.data.tags["long"]) == 5000, "cut to MLflow's limit"
    tag_run(uri, run_id, {"phiscale.slurm_array_job_id": "12,14"})
    assert client.get_run(run_id).data.tags["phiscale.slurm_array_job_id"] == "12,14"

    set_run_status(uri, run_id, "FAILED")
    ended = client.get_run(run_id).info
    assert ended.status == "FAILED" and ended.end_time is not None
    set_run_status(uri, run_id, "RUNNING")  # points resubmitted
    assert client.get_run(run_id).info.status == "RUNNING"
    set_run_status(uri, run_id, "FINISHED")
    assert client.get_run(run_id).info.status == "FINISHED"
    with pytest.raises(ValueError, match="not one of"):
        set_run_status(uri, run_id, "DONE")
