"""Where each run of a sweep stands: MLflow's status of its child run, its heartbeat, and SLURM's
state of its task, merged into pending … missing; the parent run's status follows."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from support.sweeps import HEARTBEAT_S, Child, log_child, recorded_sweep

from phiscale.sweeps.record import Submission, add_submission
from phiscale.sweeps.status import counts, merge_state, parent_status, sweep_status, update_parent


@pytest.mark.parametrize(("run", "lost", "slurm", "state"), [
    (None, False, None, "missing"),                # no run, no job: never started or forgotten
    (None, False, "PENDING", "pending"),
    (None, False, "RUNNING", "running"),          # starting up, no run yet
    ("RUNNING", False, None, "running"),
    ("RUNNING", True, None, "lost"),              # silent and SLURM knows nothing
    ("RUNNING", True, "RUNNING", "running"),      # silent, but SLURM still runs it
    ("RUNNING", False, "CANCELLED", "cancelled"),  # scancel'd before the run could say so
    ("KILLED", False, "CANCELLED", "cancelled"),
    ("KILLED", False, None, "cancelled"),
    ("KILLED", False, "REQUEUED", "pending"),      # a requeue in progress
    ("FAILED", False, None, "failed"),
    ("RUNNING", False, "TIMEOUT", "failed"),
    ("FINISHED", False, "CANCELLED", "finished"),  # trained to the end before the cancel: never retrained
    ("FINISHED", False, None, "finished"),
    (None, False, "COMPLETED", "failed"),          # the task ended without ever opening a run
    ("RUNNING", False, "COMPLETED", "lost"),       # the task ended; MLflow never heard the end
])  # fmt: skip
def test_a_runs_state_from_mlflow_and_slurm(run, lost, slurm, state):
    assert merge_state(run, lost, slurm) == state


@pytest.mark.parametrize(("states", "status"), [
    (["finished", "running"], "RUNNING"),
    (["finished", "pending", "failed"], "RUNNING"),
    (["finished", "finished"], "FINISHED"),
    (["finished", "cancelled"], "KILLED"),
    (["finished", "cancelled", "lost"], "FAILED"),
    (["missing", "finished"], "FAILED"),
])  # fmt: skip
def test_the_parent_is_running_while_runs_are_outstanding(states, status):
    assert parent_status(states) == status


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_each_run_of_a_recorded_sweep_from_its_child_run(tmp_path, uri):
    record = recorded_sweep(tmp_path, uri, experiment="each")
    ids = {
        0: log_child(record, 0, Child(status="FINISHED", top1=0.95)),
        1: log_child(record, 1, Child(status="FAILED", top1=None)),
        2: log_child(record, 2, Child(status="RUNNING", restarts=2)),
        3: log_child(record, 3, Child(status="RUNNING", silent_s=10 * HEARTBEAT_S)),
        4: log_child(record, 4, Child(status="KILLED")),
    }  # run 5 never started
    later = log_child(record, 0, Child(status="FAILED"))  # run 0 trained again (a new run): it counts
    statuses = sweep_status(record)
    assert [s.point.index for s in statuses] == [0, 1, 2, 3, 4, 5]
    assert [s.state for s in statuses] == ["failed", "failed", "running", "lost", "cancelled", "missing"]
    assert statuses[0].run.info.run_id == later != ids[0], "the latest attempt of a run counts"
    assert statuses[2].restarts == 2 and statuses[5].run is None and statuses[5].slurm_state is None
    assert counts(statuses) == {"running": 1, "failed": 2, "cancelled": 1, "lost": 1, "missing": 1}

    client = MlflowClient(uri)
    assert update_parent(record, statuses) == "RUNNING"
    assert client.get_run(record.parent_run_id).info.status == "RUNNING"
    client.set_terminated(ids[2], "FINISHED")
    assert update_parent(record, sweep_status(record)) == "FAILED"
    assert client.get_run(record.parent_run_id).info.status == "FAILED"


def test_a_job_slurm_no_longer_knows_leaves_mlflow_to_decide(tmp_path, uri, monkeypatch):
    """A submission whose array job id no cluster here knows (SLURM absent): states from MLflow alone."""
    monkeypatch.delenv("SLURM_CONF", raising=False)
    record = recorded_sweep(tmp_path, uri, experiment="unknown-job", text="name: one\nbase: [model=efficientnet]\ngrid: {model.phi: [0, 1]}\n")
    add_submission(record, Submission("slurm", [0, 1], "sbatch ...", "t", array_job_id="987654"))
    log_child(record, 0, Child(status="FINISHED"))
    statuses = sweep_status(record)
    assert [(s.state, s.slurm_state) for s in statuses] == [("finished", None), ("missing", None)]


def test_a_pruned_run_is_done_not_failed_and_the_parent_finishes_with_it(tmp_path, uri):
    record = recorded_sweep(tmp_path, uri, experiment="pruned")
    for index in range(6):
        log_child(record, index, Child(tags={"phiscale.pruned": "2"} if index in (1, 4) else {}))
    statuses = sweep_status(record)
    assert [s.state for s in statuses] == ["finished", "pruned", "finished", "finished", "pruned", "finished"]
    assert counts(statuses) == {"finished": 4, "pruned": 2}
    assert update_parent(record, statuses) == "FINISHED"
    assert parent_status(["pruned", "cancelled"]) == "KILLED" and parent_status(["pruned", "failed"]) == "FAILED"


def test_the_status_of_a_study_ends_with_its_winner_and_the_epochs_early_stopping_saved():
    from types import SimpleNamespace

    from phiscale.sweeps.status import study_lines

    winner = {"index": 2, "overrides": ["model.alpha=1.3"], "metric": "val/top1_best", "value": 0.9, "run_id": "r2",
              "how": "max val/top1_best over 2 finished search runs (2 pruned, 0 failed or missing)"}
    study = SimpleNamespace(winner=winner, stages=[{"name": "search"}], stopped=None, epochs={"spent": 10, "full": 12})
    assert study_lines(study) == [
        "search winner: run 2 (model.alpha=1.3), val/top1_best=0.9000, run r2; max val/top1_best over 2 finished "
        "search runs (2 pruned, 0 failed or missing)", "epochs: 10 spent of the full grid's 12 (83%)"]
    plain = SimpleNamespace(winner=None, stages=[], stopped=None, epochs={"spent": 18, "full": 18})
    assert study_lines(plain) == [], "a plain sweep's table ends with its counts"
