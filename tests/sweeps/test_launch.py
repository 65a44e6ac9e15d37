"""Launching a recorded sweep: the new record and parent run from a sweep file and the command line,
sbatch's arguments for an array over chosen indices, and local runs that fail one by one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from phiscale.errors import PhiscaleError
from phiscale.sweeps.launch import REPO_SCRIPT, launch, new_sweep, sbatch_args, train_command
from phiscale.sweeps.record import load_record

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("launch")


@pytest.fixture(scope="module")
def record(tmp_dir):
    """A new 4-run sweep (one per module: a new store runs migrations): store and root given relative
    to the working dir, as on a command line."""
    (tmp_dir / "s.yaml").write_text("name: quad\nbase: [model=efficientnet]\ngrid: {model.phi: [0, 1]}\n"
                                    "seeds: [0, 1]\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_dir)
        return new_sweep("s.yaml", ["paths.root=out", "tracking.uri=sqlite:///db/mlflow.db", "tracking.experiment=q"],
                         submit_command="phiscale-sweep submit s.yaml")


def test_a_new_sweep_is_recorded_with_absolute_paths_and_a_parent_run(record, tmp_dir):
    tmp_path = tmp_dir
    assert record.path == tmp_path / "out" / "sweeps" / record.id / "sweep.json"
    assert record.tracking_uri == f"sqlite:///{tmp_path}/db/mlflow.db", "tasks may start in another dir"
    assert record.experiment == "q" and len(record.points) == 4
    assert record.extra == ["paths.root=out", "tracking.uri=sqlite:///db/mlflow.db", "tracking.experiment=q"]
    parent = MlflowClient(record.tracking_uri).get_run(record.parent_run_id)
    assert parent.info.run_name == record.id and parent.data.tags["phiscale.sweep_points"] == "4"
    assert load_record(record.path).parent_run_id == record.parent_run_id


def test_sbatch_gets_one_array_over_the_chosen_indices(record):
    args = sbatch_args(record, [0, 1, 2, 3], max_parallel=2)
    assert args == ["--array=0-3%2", f"--job-name={record.id}",
                    f"--output={record.directory}/points/%a/slurm-%A_%a.out", str(REPO_SCRIPT),
                    f"sweep.record={record.path}"]
    mine = sbatch_args(record, [3, 1], extra_args=["-J", "mine", "--output=log-%a.txt", "--time=5"])
    assert mine == ["--array=1,3", "-J", "mine", "--output=log-%a.txt", "--time=5", str(REPO_SCRIPT),
                    f"sweep.record={record.path}"], "the user's job name and log files win"
    with pytest.raises(PhiscaleError, match="--max-parallel 0 must be at least 1"):
        sbatch_args(record, [0], max_parallel=0)
    with pytest.raises(PhiscaleError, match="SLURM script .*nope.sbatch not found: pass --script"):
        sbatch_args(record, [0], script="nope.sbatch")


def test_a_local_run_is_phiscale_train_on_the_record(record):
    command = train_command(record, 2)
    assert command[1:] == ["-m", "phiscale.cli.train", f"sweep.record={record.path}", "sweep.index=2",
                           f"hydra.run.dir={record.directory}/points/2/hydra"]


@pytest.mark.slow
def test_a_failing_local_run_does_not_stop_the_next(record, capsys):
    """Both runs refused by the plan before training (a bad epoch count): each tried, each failed, logged.
    (Last in this module: it changes the shared record.)"""
    record.extra.append("trainer.max_epochs=-3")
    record.save()
    done = launch(record, [1, 2], local=True)
    lines = capsys.readouterr().out.splitlines()
    assert done.codes == {1: 2, 2: 2} and done.failed == [1, 2] and done.submission is None, lines
    # Refused before a run existed: no MLflow run, so the sweep counts them (and the untried ones) missing.
    assert done.counts == {"missing": len(record.points)} and done.parent == "FAILED", done
    assert [line.split(":")[0] for line in lines] == ["run 1 (1/2)", "run 1", "run 2 (2/2)", "run 2"]
    assert "FAILED (exit code 2" in lines[1]
    log = Path(record.point(2).output_dir) / "train.log"
    assert "trainer.max_epochs=-3 must be an integer >= -1" in log.read_text()
    assert json.loads(record.path.read_text())["submissions"][-1]["launcher"] == "local"


def test_a_study_is_queued_as_one_array_per_stage_each_after_the_one_before_and_a_closer_after_all(
        tmp_dir, monkeypatch):
    from phiscale.slurm import queue as slurm_queue

    (tmp_dir / "study.yaml").write_text(
        "name: two\nbase: [model=efficientnet]\nstages:\n  search:\n    base: [model.phi=1]\n"
        "    grid: {model.alpha: [1.1, 1.2]}\n    early_stop: {metric: val/loss, rungs: [1]}\n"
        "  scale:\n    from: search\n    grid: {model.phi: [0, 0.5, 1]}\n")
    calls: list[list[str]] = []
    monkeypatch.setattr(slurm_queue, "submit", lambda args: calls.append(list(args)) or str(100 + len(calls)))
    with monkeypatch.context() as patch:
        patch.chdir(tmp_dir)
        study = new_sweep("study.yaml", ["paths.root=out", "tracking.uri=sqlite:///db/mlflow.db",
                                         "tracking.experiment=q"], submit_command="phiscale-sweep submit study.yaml")
    assert [p.stage for p in study.points] == ["search"] * 2 + ["scale"] * 3
    assert study.stage("search")["early_stop"] == {"metric": "val/loss", "mode": "min", "rungs": [1], "eta": 3}
    assert study.child_tags(3)["phiscale.stage"] == "scale"
    assert study.stage_overrides(0) == [f"sweep.id={study.id}", "sweep.stage=search", "sweep.early_stop.metric=val/loss",
                                        "sweep.early_stop.mode=min", "sweep.early_stop.rungs=[1]", "sweep.early_stop.eta=3"]
    done = launch(study, [0, 1, 2, 3, 4], local=False, max_parallel=1)
    search, scale, closer = calls
    assert search[:1] == ["--array=0-1%1"] and scale[:2] == ["--array=2-4%1", "--dependency=afterany:101"]
    assert closer[0] == "--dependency=afterany:101:102" and done.closer == "103"
    assert [s.array_job_id for s in load_record(study.path).submissions] == ["101", "102"]

    # resume: a search with a recorded winner is never run again; the scale runs are, without waiting.
    from types import SimpleNamespace

    from phiscale.sweeps.launch import resume_indices
    from phiscale.sweeps.record import locked

    def state(index: int, value: str):
        return SimpleNamespace(point=study.point(index), state=value)

    statuses = [state(0, "cancelled"), state(1, "pruned"), state(2, "cancelled"), state(3, "finished"),
                state(4, "missing")]
    assert resume_indices(study, statuses) == [0, 2, 4], "no winner yet: the search continues"
    with locked(study) as fresh:
        fresh.winner = {"run_id": "r0", "index": 1, "overrides": ["model.alpha=1.2"]}
        fresh.save()
    assert resume_indices(load_record(study.path), statuses) == [2, 4]
    calls.clear()
    launch(load_record(study.path), [2, 4], local=False)
    assert calls[0][:1] == ["--array=2,4"] and not any(a.startswith("--dependency") for a in calls[0])
    with locked(study) as fresh:  # a study stopped after a search that left nothing to retry: nothing to run
        fresh.winner, fresh.stopped = None, "no search run finished"
        fresh.save()
    done_search = [state(0, "pruned"), state(1, "pruned"), *statuses[2:]]
    assert resume_indices(load_record(study.path), done_search) == []
    assert resume_indices(load_record(study.path), statuses) == [0, 2, 4], "a search to retry clears the stop"
    assert load_record(study.path).stopped is None
