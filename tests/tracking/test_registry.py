"""The `best` alias: the highest val/top1_best under a name, never a worse one, even when several
processes register at the same moment against one real `mlflow server`."""

from __future__ import annotations

import random
import subprocess
import sys
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from phiscale.errors import PhiscaleError
from phiscale.tracking.registry import SCORE_TAG, TWIN_MODEL_TAG, best_version, check_name

# One registration, started when the go-file appears (all of them at once), as a sweep's array ends.
REGISTER = """
import pathlib, sys, time
from mlflow.tracking import MlflowClient
from phiscale.tracking.registry import register_version
uri, name, model_id, run_id, score, go = sys.argv[1:]
deadline = time.monotonic() + 120
while not pathlib.Path(go).exists() and time.monotonic() < deadline:
    time.sleep(0.005)
print(register_version(MlflowClient(uri), name, model_id=model_id, run_id=run_id, score=float(score),
                       tracking_uri=uri))
"""


def version(number: int, score: str | None):
    return SimpleNamespace(version=str(number), tags={SCORE_TAG: score} if score is not None else {})


def test_the_best_version_is_the_highest_score_and_the_earliest_of_a_tie():
    assert best_version([version(1, "0.5"), version(2, "0.9"), version(3, "0.7")]) == "2"
    assert best_version([version(1, "0.9"), version(2, "0.9")]) == "1", "a tie never moves the alias"
    assert best_version([version(1, None), version(2, "oops")]) is None, "versions without a score are not ranked"


def test_a_twin_names_best_is_the_twin_of_its_originals_best_whatever_the_scores_say():
    """NAME-images follows NAME: two runs that tie, registered in one order under NAME and in the other
    under NAME-images, still point both `best`s at one run's network."""
    twins = [SimpleNamespace(version="1", tags={SCORE_TAG: "0.9", TWIN_MODEL_TAG: "m-b"}),
             SimpleNamespace(version="2", tags={SCORE_TAG: "0.9", TWIN_MODEL_TAG: "m-a"})]
    assert best_version(twins, twin_model_id="m-a") == "2"
    assert best_version(twins, twin_model_id="m-unregistered-yet") == "1", "by score until its twin is registered"


@pytest.mark.parametrize("name", ["", "a/b", "x:y", "n@best", " pad"])
def test_a_name_that_would_break_a_models_uri_is_refused(name):
    with pytest.raises(PhiscaleError, match=r"tracking.register=.* is not a model name"):
        check_name(name)


@pytest.mark.slow
def test_concurrent_registrations_leave_best_on_the_highest_score(mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server.url)
    experiment_id = client.create_experiment("registry-race")
    name = "race"
    rng = random.Random(7)
    scores = [round(rng.uniform(0.5, 0.99), 4) for _ in range(12)]
    for wave in (scores[:6], scores[6:]):  # two arrays ending one after the other
        go = tmp_path / f"go-{len(wave)}-{wave[0]}"
        procs = []
        for score in wave:
            run = client.create_run(experiment_id)
            model = client.create_logged_model(experiment_id, name="model", source_run_id=run.info.run_id)
            procs.append(subprocess.Popen([sys.executable, "-c", REGISTER, mlflow_server.url, name, model.model_id,
                                           run.info.run_id, str(score), str(go)], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        go.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
        versions = client.search_model_versions(f"name = '{name}'")
        best = client.get_model_version_by_alias(name, "best")
        top = max(float(v.tags[SCORE_TAG]) for v in versions)
        assert float(best.tags[SCORE_TAG]) == top, f"best is at {best.tags[SCORE_TAG]}, the highest is {top}"
    assert len(client.search_model_versions(f"name = '{name}'")) == 12


def test_a_first_write_of_best_that_loses_the_insert_race_is_retried(tmp_path):
    """MLflow's SQL store sets an alias with a read then an insert: another registration that inserts
    `best` between the two makes this one's insert fail on the unique key. Here that other writer is
    real (a second connection to the same sqlite file, committing just before our insert), and the
    loser must read again and move `best` onto the higher score, not fail the end of its run."""
    import sqlite3

    from sqlalchemy import event

    from phiscale.tracking.registry import settle_best_alias

    db = tmp_path / "registry.db"
    client = MlflowClient(f"sqlite:///{db}")
    client.create_registered_model("race")
    for score in ("0.5", "0.9"):
        client.create_model_version("race", source=str(tmp_path), tags={SCORE_TAG: score})
    engine = client._get_registry_client().store.engine
    cut_in = []

    def another_writer_first(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO REGISTERED_MODEL_ALIASES") and not cut_in:
            other = sqlite3.connect(db)
            other.execute("INSERT INTO registered_model_aliases (workspace, name, alias, version) "
                          "VALUES ('default', 'race', 'best', 1)")
            other.commit()
            other.close()
            cut_in.append(statement)

    event.listen(engine, "before_cursor_execute", another_writer_first)
    try:
        assert settle_best_alias(client, "race") == "2"
    finally:
        event.remove(engine, "before_cursor_execute", another_writer_first)
    assert cut_in, "the other writer never cut in: the store no longer inserts aliases this way"
    assert str(client.get_model_version_by_alias("race", "best").version) == "2"
