"""MlflowServer: a real `mlflow server` on 127.0.0.1 that tracks over HTTP, proxies artifacts to
its own store, and stops as a whole process group."""

from __future__ import annotations

import os
import time

import pytest

from phiscale.errors import PhiscaleError
from phiscale.server.process import MlflowServer, free_port, group_members, is_healthy, port_holder


@pytest.mark.slow
def test_server_tracks_over_http_proxies_artifacts_and_stops_whole(tmp_path):
    from mlflow.tracking import MlflowClient

    server = MlflowServer(tmp_path / "server")
    with server:
        assert server.url.startswith("http://127.0.0.1:") and is_healthy(server.url)
        pgid = os.getpgid(server._process.pid)
        assert pgid == server._process.pid != os.getpgid(0), "not in its own process group"
        assert len(group_members(pgid)) >= 2, "expected the CLI and its uvicorn worker in the group"

        client = MlflowClient(server.url)
        experiment_id = client.create_experiment("server-smoke")
        run_id = client.create_run(experiment_id, run_name="smoke").info.run_id
        client.log_metric(run_id, "val/top1", 0.5)
        (tmp_path / "note.txt").write_text("proxied")
        client.log_artifact(run_id, str(tmp_path / "note.txt"))
        assert client.get_run(run_id).data.metrics == {"val/top1": 0.5}
        stored = list((tmp_path / "server" / "artifacts").rglob("note.txt"))
        assert stored and stored[0].read_text() == "proxied", "artifact not in --artifacts-destination"
        print(f"\nmlflow server started in {server.startup_s:.1f} s")

    deadline = time.monotonic() + 5
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert group_members(pgid) == [], "server processes left after stop()"
    assert not is_healthy(server.url, timeout=1.0)


@pytest.mark.slow
def test_a_busy_port_is_refused_at_once(pg_server, tmp_path):
    with pytest.raises(PhiscaleError, match=f"already answers at {pg_server.url} \\(pid \\d+ "):
        MlflowServer(tmp_path, port=pg_server.port).start()
    assert not (tmp_path / "server.log").exists(), "refused before launching anything"


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_port_holder_names_the_listening_process():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_holder(port).startswith(f"pid {os.getpid()} (")
    assert port_holder(port) is None
