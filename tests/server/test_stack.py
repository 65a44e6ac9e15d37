"""phiscale-server on real PostgreSQL 15 and a real `mlflow server`: start, status, stop,
idempotence, refusals, a real training run, and 32 processes racing to create one experiment."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import socket
import sqlite3
import subprocess
from pathlib import Path

import pytest
from support.runs import TRAIN

from phiscale.server.database import Postgres
from phiscale.server.process import free_port, group_members, is_healthy, port_is_free, process_start_ticks
from phiscale.server.stack import STATE_FILE, allowed_hosts
from phiscale.tracking import get_or_create_experiment


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    return lines[0]


# ---------------------------------------------------------------- on the shared server -----
@pytest.mark.slow
def test_status_shows_uri_pids_counts_and_health(pg_server, server_cli):
    result = server_cli("status", "--dir", str(pg_server.dir))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "running (postgres backend)" in out and pg_server.url in out
    assert "mlflow server  pid" in out and "PostgreSQL     pid" in out, out
    assert out.count("healthy;") == 2 and "NOT healthy" not in out, out
    assert "experiments," in out and " runs" in out
    assert "started PostgreSQL" in pg_server.startup_log and "and mlflow server" in pg_server.startup_log


@pytest.mark.slow
def test_start_on_a_running_dir_is_idempotent(pg_server, server_cli):
    state_before = json.loads((pg_server.dir / STATE_FILE).read_text())
    again = server_cli("start", "--dir", str(pg_server.dir), "--port", str(pg_server.port))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"export MLFLOW_TRACKING_URI={pg_server.url}"
    assert "already running" in again.stderr
    assert json.loads((pg_server.dir / STATE_FILE).read_text())["mlflow_pid"] == state_before["mlflow_pid"]


@pytest.mark.slow
def test_a_dir_holding_another_server_is_refused(pg_server, server_cli):
    other_port = one_line_error(server_cli("start", "--dir", str(pg_server.dir), "--port", str(free_port())))
    assert f"already runs a server at {pg_server.url}" in other_port and "stop it first" in other_port
    other_db = one_line_error(server_cli("start", "--dir", str(pg_server.dir), "--db", "sqlite"))
    assert "holds a postgres tracking server" in other_db and "--db postgres" in other_db
    assert is_healthy(pg_server.url), "a refused start must leave the running server alone"


@pytest.mark.slow
def test_a_taken_port_is_refused_naming_the_holder(pg_server, server_cli, server_dir):
    fresh = server_dir("phiscale-taken-")
    try:
        refusal = one_line_error(
            server_cli("start", "--dir", str(fresh / "srv"), "--port", str(pg_server.port))
        )
        assert f"port {pg_server.port} on 127.0.0.1 is taken by pid " in refusal, refusal
        assert not (fresh / "srv" / "pg" / "PG_VERSION").exists(), "refused before creating a cluster"
        with socket.socket() as holder:  # a port PostgreSQL would want
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            pg_port = holder.getsockname()[1]
            refusal = one_line_error(
                server_cli(
                    "start",
                    "--dir",
                    str(fresh / "srv"),
                    "--port",
                    str(free_port()),
                    "--pg-port",
                    str(pg_port),
                )
            )
        assert f"port {pg_port} on 127.0.0.1 is taken by pid " in refusal and "--pg-port" in refusal, refusal
    finally:
        server_cli("stop", "--dir", str(fresh / "srv"))
        shutil.rmtree(fresh, ignore_errors=True)


@pytest.mark.slow
def test_a_training_run_logs_to_the_server(pg_server, tmp_path):
    from mlflow.tracking import MlflowClient

    cmd = [TRAIN, "experiment=digits_demo", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
           "tracking=server", f"tracking.uri={pg_server.url}", "tracking.experiment=server-e2e",
           "trainer.progress_bar=false", f"paths.root={tmp_path}/outputs"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]

    client = MlflowClient(pg_server.url)
    experiment = client.get_experiment_by_name("server-e2e")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert 0.0 <= run.data.metrics["val/top1"] <= 1.0
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), "artifacts must be proxied"
    config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl")))
    assert "digits" in config.read_text()
    stored = list((pg_server.dir / "artifacts").rglob("config.yaml"))
    assert stored, "config.yaml is not in the server's artifact store"


def _race_to_create(create, uri: str, name: str, go, results) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    go.wait()
    try:
        results.put(("ok", create(client, name)))
    except Exception as err:
        results.put(("error", f"{type(err).__name__}: {err}"))


@pytest.mark.slow
def test_32_processes_create_one_experiment(pg_server):
    from mlflow.tracking import MlflowClient

    name = "created-by-32-at-once"
    create = get_or_create_experiment
    # fork: the children share this process's imports (32 fresh interpreters would each spend
    # seconds importing mlflow and lightning) and all call `create` when `go` is set.
    ctx = mp.get_context("fork")
    go, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_race_to_create, args=(create, pg_server.url, name, go, results))
        for _ in range(32)
    ]
    for proc in procs:
        proc.start()
    go.set()
    answers = [results.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [a for a in answers if a[0] == "error"] == []
    client = MlflowClient(pg_server.url)
    same_name = client.search_experiments(filter_string=f"name = '{name}'")
    assert len(same_name) == 1
    assert {a[1] for a in answers} == {same_name[0].experiment_id}, "every process got the one experiment"
    assert client.search_runs(["0"]) == [], "nothing may land in the Default experiment"


@pytest.mark.slow
def test_stop_stops_everything_it_started_and_start_brings_back_the_data(pg_server, server_cli):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(pg_server.url)
    kept = client.create_experiment("survives-a-restart")
    state = json.loads((pg_server.dir / STATE_FILE).read_text())
    pg_pid = Postgres(pg_server.dir).running()[0]

    stopped = server_cli("stop", "--dir", str(pg_server.dir))
    try:
        assert stopped.returncode == 0 and "stopped mlflow server" in stopped.stderr, stopped.stderr
        assert group_members(state["mlflow_pid"]) == [], "server processes left after stop"
        assert process_start_ticks(pg_pid) is None, "postmaster left after stop (a zombie counts as gone)"
        assert port_is_free(pg_server.port) and port_is_free(state["pg_port"])
        again = server_cli("stop", "--dir", str(pg_server.dir))
        assert again.returncode == 0 and "is not running" in again.stderr
        status = server_cli("status", "--dir", str(pg_server.dir))
        assert status.returncode == 3 and "stopped" in status.stdout
    finally:
        restarted = server_cli("start", "--dir", str(pg_server.dir))
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip() == f"export MLFLOW_TRACKING_URI={pg_server.url}", (
        "same ports after restart"
    )
    assert MlflowClient(pg_server.url).get_experiment(kept).name == "survives-a-restart"


# ---------------------------------------------------------------- sqlite and failures -----
@pytest.mark.slow
def test_sqlite_backend_uses_wal_and_stops(tmp_path, server_cli):
    from mlflow.tracking import MlflowClient

    srv = tmp_path / "srv"
    port = free_port()
    started = server_cli(
        "start", "--dir", str(srv), "--db", "sqlite", "--port", str(port), "--workers", "1",
        "--allowed-hosts", "tracking.example.org", "--no-auth",  # on 127.0.0.1: the Host checks alone
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        url = started.stdout.strip().removeprefix("export MLFLOW_TRACKING_URI=")
        MlflowClient(url).create_experiment("on-sqlite")
        assert host_header_status(port, "tracking.example.org") == 200, "--allowed-hosts adds a name"
        assert host_header_status(port, f"127.0.0.1:{port}") == 200, "MLflow's defaults are kept"
        assert host_header_status(port, "elsewhere.example.org") == 403
        with sqlite3.connect(srv / "mlflow.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        status = server_cli("status", "--dir", str(srv))
        assert (
            status.returncode == 0 and "sqlite backend" in status.stdout and "2 experiments" in status.stdout
        )
        assert "auth           off (--no-auth" in status.stdout, status.stdout
    finally:
        stopped = server_cli("stop", "--dir", str(srv))
    assert stopped.returncode == 0 and "stopped mlflow server" in stopped.stderr
    assert not is_healthy(url, timeout=1.0)


def host_header_status(port: int, host_header: str) -> int:
    """HTTP status of an API call to 127.0.0.1:port sent with `Host: host_header`."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host_header})
        return conn.getresponse().status
    finally:
        conn.close()


def test_serving_all_interfaces_accepts_this_nodes_names():
    allowed = allowed_hosts("0.0.0.0", "mlflow.example.org").split(",")
    assert {socket.gethostname(), f"{socket.gethostname()}:*", "mlflow.example.org"} <= set(allowed)
    assert {"localhost", "127.0.0.1:*", "10.*"} <= set(allowed), "MLflow's defaults must stay"
    assert allowed_hosts("127.0.0.1", None) is None


def test_missing_postgres_binaries_name_the_package(tmp_path, server_cli):
    no_pg = {"PHISCALE_PG_BIN": str(tmp_path / "no-pg")}
    line = one_line_error(
        server_cli("start", "--dir", str(tmp_path / "srv"), "--port", str(free_port()), env=no_pg)
    )
    assert "PostgreSQL 15 is not installed" in line and "apt-get install postgresql" in line, line


def test_initdb_failure_points_at_its_log(server_cli, server_dir):
    srv = server_dir("phiscale-initdb-") / "srv"
    try:
        (srv / "pg").mkdir(parents=True)
        (srv / "pg" / "not-a-cluster.txt").write_text("initdb refuses a non-empty folder")
        line = one_line_error(server_cli("start", "--dir", str(srv), "--port", str(free_port())))
        assert "initdb failed" in line and str(srv / "logs" / "initdb.log") in line, line
    finally:
        shutil.rmtree(srv.parent, ignore_errors=True)


def test_a_server_not_healthy_in_time_is_stopped_and_its_log_quoted(tmp_path, server_cli):
    srv = tmp_path / "srv"
    port = free_port()
    line = one_line_error(
        server_cli("start", "--dir", str(srv), "--db", "sqlite", "--port", str(port), "--timeout", "1")
    )
    assert f"was not healthy after 1 s; see {srv / 'logs' / 'mlflow.log'}" in line, line
    assert json.loads((srv / STATE_FILE).read_text())["mlflow_pid"] is None
    assert port_is_free(port), "the half-started server must be stopped"
