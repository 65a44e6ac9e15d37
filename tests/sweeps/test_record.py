"""A sweep's record: its id, the file (runs, their overrides and output dirs, the sweep file's hash),
its parent MLflow run and the children's tags, and finding it again by id, name or path."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone

import pytest
from mlflow.tracking import MlflowClient
from support.sweeps import TWO_BY_THREE, recorded_sweep

from phiscale.errors import PhiscaleError
from phiscale.sweeps.file import load_sweep
from phiscale.sweeps.record import (
    RECORD,
    Submission,
    add_submission,
    create_record,
    find_record,
    format_indices,
    load_record,
    new_sweep_id,
    quote_value,
)


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    """One store for the module (a new sqlite store runs MLflow's migrations, seconds each)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_a_sweep_id_is_short_readable_and_dated():
    sweep_id = new_sweep_id("phi", datetime(2026, 11, 28, tzinfo=timezone.utc))
    assert re.fullmatch(r"phi-20261128-[0-9a-f]{4}", sweep_id)
    assert len({new_sweep_id("phi") for _ in range(50)}) > 40, "ids of one day differ"


def test_the_record_holds_every_run_with_its_own_output_dir(tmp_path, uri):
    record = recorded_sweep(tmp_path, uri)
    sweep_file = tmp_path / "sweep.yaml"
    data = json.loads(record.path.read_text())
    assert record.path == tmp_path / "out" / "sweeps" / record.id / RECORD
    assert data["name"] == "duo" and data["id"] == record.id and data["sweep_file"] == str(sweep_file)
    assert data["sweep_hash"] == hashlib.sha256(sweep_file.read_bytes()).hexdigest()
    assert data["extra"] == ["trainer.max_epochs=1"] and data["submit_command"] == "phiscale-sweep submit sweep.yaml"
    assert (data["tracking_uri"], data["experiment"]) == (uri, "sweeps")
    assert [(p["index"], p["point"], p["seed"]) for p in data["points"]] == [
        (0, 0, 0), (1, 0, 1), (2, 0, 2), (3, 1, 0), (4, 1, 1), (5, 1, 2)]
    assert data["points"][4]["overrides"] == ["model=efficientnet", "model.phi=1", "seed=1"]
    assert data["points"][4]["own"] == ["model.phi=1", "seed=1"]
    for point in record.points:
        assert point.output_dir == str(record.directory / "points" / str(point.index))
        assert (record.directory / "points" / str(point.index)).is_dir(), "SLURM writes the task's log there"
    assert load_record(record.path) == record and load_record(record.directory) == record


def test_the_parent_run_describes_the_sweep_and_the_children_name_it(tmp_path, uri):
    record = recorded_sweep(tmp_path, uri)
    client = MlflowClient(uri)
    parent = client.get_run(record.parent_run_id)
    assert parent.info.run_name == record.id and parent.info.status == "RUNNING"
    tags = parent.data.tags
    assert tags["phiscale.sweep"] == "duo" and tags["phiscale.sweep_id"] == record.id
    assert tags["phiscale.sweep_file"] == record.sweep_file and tags["phiscale.sweep_hash"] == record.sweep_hash
    assert tags["phiscale.sweep_points"] == "6" and tags["phiscale.submit_command"] == record.submit_command
    assert tags["phiscale.sweep_parent"] == "true" and "phiscale.slurm_array_job_id" not in tags
    assert record.id in tags["mlflow.note.content"] and "status" in tags["mlflow.note.content"]
    assert record.child_tags(5) == {
        "sweep": "duo", "sweep_index": "5", "sweep_point": "1", "seed": "2", "phiscale.sweep_id": record.id,
        "phiscale.sweep_overrides": "model.phi=1 seed=2", "mlflow.parentRunId": record.parent_run_id,
    }

    add_submission(record, Submission("slurm", [0, 1, 2, 3, 4, 5], "sbatch ...", "now", array_job_id="41"))
    add_submission(record, Submission("slurm", [2], "sbatch ...", "later", array_job_id="57"))
    assert client.get_run(record.parent_run_id).data.tags["phiscale.slurm_array_job_id"] == "41,57"
    again = load_record(record.path)
    assert again.latest_submission(2).array_job_id == "57" and again.latest_submission(3).array_job_id == "41"


def test_found_by_id_by_name_the_latest_and_by_path(tmp_path, uri):
    first = recorded_sweep(tmp_path, uri)
    second = recorded_sweep(tmp_path, uri)
    assert first.id != second.id
    root = tmp_path / "out"
    assert find_record(first.id, root) == first
    assert find_record("duo", root).id == max((first, second), key=lambda r: (r.created, r.id)).id
    assert find_record(str(first.path), root) == first and find_record(str(first.directory), root) == first
    with pytest.raises(PhiscaleError, match=rf"no sweep 'nope' under .*recent ids: .*{first.id}"):
        find_record("nope", root)


def test_a_multirun_record_lives_in_its_sweep_dir_and_is_linked_from_the_root(tmp_path, uri):
    path = tmp_path / "s.yaml"
    path.write_text(TWO_BY_THREE)
    multirun = tmp_path / "multirun" / "2026-11-28" / "10-00-00"
    record = create_record(load_sweep(path), root=tmp_path / "out", extra=[], submit_command="phiscale-train -m",
                           tracking_uri=uri, experiment="e", indices=[1, 4], directory=multirun)
    assert record.path == multirun / RECORD and [p.index for p in record.points] == [1, 4]
    assert (tmp_path / "out" / "sweeps" / record.id).resolve() == multirun
    assert find_record(record.id, tmp_path / "out") == record
    with pytest.raises(PhiscaleError, match=r"has no run sweep.index=2; its runs are 1,4"):
        record.point(2)


@pytest.mark.parametrize(("text", "extra", "message"), [
    ("grid: {model.phi: [0]}\n", ["paths.output_dir=/x"], "the command line sets paths.output_dir=/x"),
    ("base: [paths.output_dir=/x]\ngrid: {model.phi: [0]}\n", [], "base sets paths.output_dir=/x"),
    ("points: [[tracking.experiment=other]]\n", [], "point 0 sets tracking.experiment; a sweep's runs share"),
])  # fmt: skip
def test_keys_the_record_pins_are_refused_where_they_would_split_the_sweep(tmp_path, uri, text, extra, message):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(PhiscaleError, match=message):
        create_record(load_sweep(path), root=tmp_path, extra=extra, submit_command="x", tracking_uri=uri,
                      experiment="e")
    assert not (tmp_path / "sweeps").exists() or not any((tmp_path / "sweeps").iterdir()), "nothing recorded"


def test_a_broken_record_is_named(tmp_path):
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(PhiscaleError, match="is not a phiscale sweep record"):
        load_record(tmp_path / RECORD)
    with pytest.raises(PhiscaleError, match="no sweep record at"):
        load_record(tmp_path / "missing" / RECORD)


def test_indices_as_slurm_array_ranges_and_values_as_hydra_overrides():
    assert format_indices([0, 1, 2, 3]) == "0-3"
    assert format_indices([7, 1, 4]) == "1,4,7"
    assert format_indices([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert quote_value("/runs/a_b-1.2/sqlite:///x") == "/runs/a_b-1.2/sqlite:///x"
    assert quote_value("/my runs/it's") == "'/my runs/it\\'s'"
