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
