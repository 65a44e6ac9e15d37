"""phiscale.tracking: the URI rules, the reachability check and the client factory."""

from __future__ import annotations

import time

import pytest

from phiscale import tracking
from phiscale.errors import PhiscaleError
from phiscale.server.process import free_port


def test_a_silent_server_is_named_within_its_timeout():
    silent = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(PhiscaleError, match=f"{silent} is unreachable"):
        tracking.check_reachable(silent, 1.0)
    assert time.monotonic() - started < 60, "gave up long after its 1 s timeout (MLflow's own retries?)"


def test_a_database_uri_is_named_in_one_line_within_its_timeout_and_hides_its_password():
    port = free_port()
    for uri, shown in ((f"postgresql://nobody@127.0.0.1:{port}/x", f"postgresql://nobody@127.0.0.1:{port}/x"),
                       (f"postgresql+psycopg://u:secret@127.0.0.1:{port}/x", f"postgresql+psycopg://u:***@127.0.0.1:{port}/x")):  # fmt: skip
        started = time.monotonic()
        with pytest.raises(PhiscaleError) as refused:
            tracking.check_reachable(uri, 2.0)
        assert time.monotonic() - started < 10 and "\n" not in str(refused.value)
        assert f"tracking database {shown} is unreachable" in str(refused.value) and "secret" not in str(refused.value)


@pytest.mark.slow
def test_a_database_that_refuses_the_password_is_one_line(pg_server):
    import json

    pg_port = json.loads((pg_server.dir / "phiscale-server.json").read_text())["pg_port"]
    with pytest.raises(PhiscaleError, match=r"refused the connection \(.*password authentication failed"):
        tracking.check_reachable(f"postgresql://mlflow:wrong@127.0.0.1:{pg_port}/mlflow", 5.0)


def test_readers_refuse_an_absent_sqlite_store_and_writers_create_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(PhiscaleError, match="no MLflow database at .*none.db"):
        tracking.check_reachable(uri, must_exist=True)
    tracking.check_reachable(uri)  # a training run may start a new store
    experiment_id = tracking.get_or_create_experiment(tracking.client(uri), "x")
    assert tracking.get_or_create_experiment(tracking.client(uri), "x") == experiment_id


def test_new_sqlite_stores_are_copies_of_one_migrated_once(tmp_path, monkeypatch):
    """A store's 68 migrations run once per MLflow version, not in every new store (issue 31)."""
    from phiscale.tracking.store import empty_store_template

    monkeypatch.setenv("PHISCALE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
    tracking.get_or_create_experiment(tracking.client(first), "x")
    template = empty_store_template()
    made = template.stat().st_mtime_ns
    store = tracking.client(second)
    assert template.stat().st_mtime_ns == made, "the second store is copied, not migrated again"
    assert [e.name for e in store.search_experiments()] == ["Default"], "an empty store, as MLflow makes one"
    assert store.get_experiment("0").artifact_location == str(tmp_path / "mlruns" / "0"), "MLflow's own default"
    run = store.create_run(tracking.get_or_create_experiment(store, "x"))
    assert store.get_run(run.info.run_id).info.status == "RUNNING"


def test_a_store_is_made_by_mlflow_when_the_cache_cannot_be_written(tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache would go")
    monkeypatch.setenv("PHISCALE_CACHE", str(blocked))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert tracking.get_or_create_experiment(tracking.client(uri), "x") == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.db", "m.db.lock", "not-a-dir"], "no temporary left"


def test_uri_precedence_flag_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_uri() == tracking.DEFAULT_URI == "sqlite:///outputs/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_uri() == "http://127.0.0.1:5000"
    assert tracking.resolve_uri("sqlite:///a.db") == "sqlite:///a.db"


def test_relative_sqlite_paths_become_absolute_and_bare_paths_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.normalize_tracking_uri("sqlite:///sub/m.db") == f"sqlite:///{tmp_path}/sub/m.db"
    with pytest.raises(PhiscaleError, match="MLflow 3 refuses file stores"):
        tracking.normalize_tracking_uri("mlruns")


def test_links_open_the_run_page_and_the_runs_table_in_the_training_view():
    view = "?workflowType=machine_learning"  # MLflow 3.17's UI otherwise opens its GenAI view
    assert tracking.run_url("http://h:5000/", "3", "abc") == f"http://h:5000/#/experiments/3/runs/abc{view}"
    assert tracking.run_url("sqlite:////x/m.db", "3", "abc") == f"http://127.0.0.1:5000/#/experiments/3/runs/abc{view}"
    assert tracking.experiment_url("http://h:5000", "3") == f"http://h:5000/#/experiments/3{view}"


@pytest.mark.parametrize(("message", "line"), [
    ("API request to http://h:1/api/2.0/mlflow/runs/create failed with exception HTTPConnectionPool(host='h', "
     "port=1): Max retries exceeded with url: /api/2.0/mlflow/runs/create (Caused by NewConnectionError(\"HTTP"
     "Connection(host='h', port=1): Failed to establish a new connection: [Errno 111] Connection refused\"))",
     "MlflowException: NewConnectionError: HTTPConnection(host='h', port=1): Failed to establish a new "
     "connection: [Errno 111] Connection refused"),
    ("API request to http://h:5000/x failed with exception HTTPConnectionPool(host='h', port=5000): Max retries "
     "exceeded with url: /x (Caused by ResponseError('too many 503 error responses'))",
     "MlflowException: ResponseError: too many 503 error responses"),
    ("API request to http://h:5000/x failed with exception HTTPConnectionPool(host='h', port=5000): Read timed "
     "out. (read timeout=5)", "MlflowException: HTTPConnectionPool(host='h', port=5000): Read timed out. (read timeout=5)"),
    ("RESOURCE_DOES_NOT_EXIST: Run 'abc' not found\nTraceback ...", "MlflowException: RESOURCE_DOES_NOT_EXIST: Run 'abc' not found"),
])  # fmt: skip
def test_errors_are_described_by_their_cause_without_mlflows_url_noise(message, line):
    from mlflow.exceptions import MlflowException

    from phiscale.tracking.store import describe_error

    assert describe_error(MlflowException(message)) == line
