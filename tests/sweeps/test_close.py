"""The parent closes itself: the closer's sbatch line (after every array, whatever their end), and what
it computes from the runs in a real sqlite store: the parent's status and the epochs spent."""

from __future__ import annotations

import sys

from support.sweeps import Child, log_child, recorded_sweep

from phiscale.sweeps.close import close_sweep, closer_args, main
from phiscale.sweeps.record import load_record

TRIO = "name: trio\ngrid:\n  seed: [0, 1, 2]\n"


def test_the_closer_runs_after_every_array_whatever_their_end_and_needs_no_gpu(tmp_path):
    record = recorded_sweep(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", TRIO)
    args = closer_args(record, ["101", "102"], ["--time=60", "--gpus-per-node=1", "--partition=debug"])
    assert args[0] == "--dependency=afterany:101:102"
    assert f"--job-name={record.id}-close" in args and "--partition=debug" in args
    assert "--gpus-per-node=1" not in args and "--time=10" in args
    assert args[-1] == f"--wrap=exec {sys.executable} -m phiscale.sweeps.close {record.path}"


def test_closing_sets_the_parent_from_the_runs_and_records_the_epochs_spent(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    record = recorded_sweep(tmp_path, uri, TRIO)
    for index, child in enumerate([Child(), Child(tags={"phiscale.pruned": "2"}), Child()]):
        run_id = log_child(record, index, child)
        MlflowClient(uri).log_param(run_id, "trainer.max_epochs", "6")
    assert main([str(record.path)]) == 0
    assert f"sweep {record.id} closed: parent run {record.parent_run_id} FINISHED; epochs 14 spent of the " \
           "full grid's 18" in capsys.readouterr().out
    assert MlflowClient(uri).get_run(record.parent_run_id).info.status == "FINISHED", "pruned counts as done"
    assert load_record(record.path).epochs == {"spent": 14, "full": 18}


def test_a_failed_run_closes_the_parent_failed(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    record = recorded_sweep(tmp_path, uri, TRIO)
    log_child(record, 0, Child())
    log_child(record, 1, Child(status="FAILED"))
    parent, _ = close_sweep(record)  # run 2 never ran: missing
    assert parent == "FAILED"
