"""The search's winner on a real sqlite store: the best finished, unpruned point; ties to fewer MACs;
picked once and recorded with its values; no finished point stops the study on the record and parent."""

from __future__ import annotations

import json

import pytest
from support.sweeps import Child, log_child

from phiscale.errors import PhiscaleError
from phiscale.sweeps.record import STOPPED_TAG, WINNER_TAG, create_record, load_record, open_parent_run
from phiscale.sweeps.study import load_study, stage_record
from phiscale.sweeps.winner import ensure_winner, run_overrides

STUDY = """name: pick
base: [model=efficientnet]
stages:
  search:
    base: [model.phi=1]
    points:
      - {model.alpha: 1.2, model.beta: 1.1, model.gamma: 1.15}
      - {model.alpha: 1.4, model.beta: 1.1, model.gamma: 1.0}
      - {model.alpha: 1.0, model.beta: 1.2, model.gamma: 1.15}
    early_stop: {metric: val/loss, rungs: [1], eta: 2}
  scale:
    from: search
    grid: {model.phi: [0, 0.5]}
"""


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "pick.yaml"
    path.write_text(STUDY)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    record = create_record(load_study(path), root=tmp_path / "out", extra=[], submit_command="phiscale-sweep submit",
                           tracking_uri=uri, experiment="pick")
    stage_record(record, load_study(path))
    open_parent_run(record)
    return record


def coefficients(record, index: int) -> dict[str, str]:
    return dict(o.split("=") for o in record.point(index).own)


def test_the_best_finished_unpruned_point_wins_and_a_tie_goes_to_fewer_macs(study):
    from mlflow.tracking import MlflowClient

    log_child(study, 0, Child(top1=0.90, macs=3e6, aug=coefficients(study, 0)))
    log_child(study, 1, Child(top1=0.99, tags={"phiscale.pruned": "1"}, aug=coefficients(study, 1)))  # pruned
    winner_id = log_child(study, 2, Child(top1=0.90, macs=2e6, aug=coefficients(study, 2)))  # tie, fewer MACs

    assert run_overrides(study, 4) == [*study.point(4).overrides, "model.alpha=1.0", "model.beta=1.2",
                                       "model.gamma=1.15"]
    record = load_record(study.path)
    assert record.winner["run_id"] == winner_id and record.winner["index"] == 2
    assert record.winner["values"] == {"0": 0.9, "2": 0.9}, "the values it was chosen from"
    assert "max val/top1_best over 2 finished search runs (1 pruned" in record.winner["how"]
    assert "fewer MACs won" in record.winner["how"]
    assert MlflowClient(study.tracking_uri).get_run(study.parent_run_id).data.tags[WINNER_TAG] == winner_id
    assert json.loads(study.path.read_text())["winner"]["run_id"] == winner_id
    assert run_overrides(study, 0) == study.point(0).overrides, "a search run takes nothing from a winner"


def test_the_winner_is_chosen_once(study):
    log_child(study, 0, Child(top1=0.80, aug=coefficients(study, 0)))
    first = ensure_winner(load_record(study.path)).winner
    log_child(study, 1, Child(top1=0.95, aug=coefficients(study, 1)))  # a better run appearing later
    again = ensure_winner(load_record(study.path)).winner
    assert again == first and again["index"] == 0


def test_no_finished_search_point_stops_the_study_on_the_record_and_the_parent(study, capsys):
    from mlflow.tracking import MlflowClient

    log_child(study, 0, Child(status="FAILED", aug=coefficients(study, 0)))
    log_child(study, 1, Child(top1=0.9, tags={"phiscale.pruned": "1"}, aug=coefficients(study, 1)))
    with pytest.raises(PhiscaleError) as err:
        run_overrides(study, 4)
    message = str(err.value)
    assert message.startswith(f"study {study.id} stopped: no search run finished with val/top1_best (1 pruned, "
                              "2 failed, cancelled or missing of 3)") and "\n" not in message
    assert load_record(study.path).stopped in message
    parent = MlflowClient(study.tracking_uri).get_run(study.parent_run_id)
    assert parent.info.status == "FAILED" and parent.data.tags[STOPPED_TAG] == load_record(study.path).stopped
    assert capsys.readouterr().out.count("stopped: ") == 1
