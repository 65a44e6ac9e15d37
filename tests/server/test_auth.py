"""A locked server, as its users meet it: strangers get 401, each user keeps to their permissions,
a digits run trains with MLflow's own credential variables, a wrong password is refused at start,
a password changed mid-run keeps the journal for phiscale-sync, and `--tls` serves HTTPS with a
certificate kept across restarts. The start options and files are checked without a server."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.runs import FAST, SYNC, TRAIN
from support.tracking_servers import admin_password, signed_in

from phiscale.errors import PhiscaleError
from phiscale.server.auth import (
    AUTH_CACHE_TTL_S,
    is_loopback,
    self_signed_certificate,
    settle_options,
    write_credentials,
)
from phiscale.server.process import free_port
from phiscale.server.stack import STATE_FILE, State
from phiscale.tracking.journal import Journal, RunRecord, now_ms
from phiscale.tracking.sender import Sender
from phiscale.tracking.store import check_reachable


def api(url: str, path: str, user: str | None = None, password: str | None = None, body: dict | None = None,
        cafile: str | None = None) -> int:
    """HTTP status of one REST call (GET, or POST with `body`), signed in when `user` is given."""
    request = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def env_as(user: str, password: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}


# ---------------------------------------------------------------- without a server -----
def test_no_auth_only_on_loopback_and_clear_passwords_off_it_are_named():
    def settle(host, **options):
        state = State("sqlite", host, 5000, 1)
        given = {"auth": None, "default_permission": None, "tls": None, "tls_cert": None, "tls_key": None}
        return state, settle_options(state, None, **{**given, **options})

    state, warnings = settle("127.0.0.1")
    assert state.auth and state.default_permission == "READ" and not state.tls and warnings == []
    assert len(state.admin_password) >= 12 and len(state.secret_key) >= 32
    with pytest.raises(PhiscaleError, match=r"--no-auth with --host 0\.0\.0\.0 would let anyone"):
        settle("0.0.0.0", auth=False)
    assert settle("::1", auth=False)[0].auth is False
    (warning,) = settle("0.0.0.0")[1]
    assert "passwords cross the network in clear" in warning and "--tls" in warning
    assert settle("0.0.0.0", tls=True)[1] == []
    with pytest.raises(PhiscaleError, match="--tls-cert and --tls-key go together"):
        settle("127.0.0.1", tls_cert="/etc/hostname")
    kept = State("sqlite", "127.0.0.1", 5000, 1, secret_key="k" * 64, admin_password="p" * 24,
                 default_permission="NO_PERMISSIONS")  # fmt: skip
    again = State("sqlite", "127.0.0.1", 5000, 1)
    settle_options(again, kept, auth=None, default_permission=None, tls=None, tls_cert=None, tls_key=None)
    assert (again.secret_key, again.admin_password, again.default_permission) == ("k" * 64, "p" * 24, "NO_PERMISSIONS")
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")


def test_the_certificate_is_made_once_for_this_nodes_names(tmp_path):
    from cryptography import x509

    cert, key = self_signed_certificate(tmp_path, ["login01.example.org"])
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert {"login01.example.org", "localhost"} <= set(names.get_values_for_type(x509.DNSName))
    before = cert.read_bytes()
    assert self_signed_certificate(tmp_path, ["elsewhere"]) == (cert, key) and cert.read_bytes() == before


def test_the_credentials_file_is_mlflows_own_and_private(tmp_path):
    path = write_credentials(tmp_path / "home" / ".mlflow" / "credentials", "alice", "per%cent-password")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    probe = "from mlflow.utils.credentials import read_mlflow_creds as r; c = r(); print(c.username, c.password)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                            env={**clean, "HOME": str(tmp_path / "home")})  # fmt: skip
    assert result.stdout.split() == ["alice", "per%cent-password"], result.stderr[-2000:]


# ---------------------------------------------------------------- on the shared locked server -----
@pytest.mark.slow
def test_each_user_keeps_to_their_permissions_and_a_wrong_password_is_refused_at_start(
    pg_server, server_cli, tmp_path
):
    srv, url = str(pg_server.dir), pg_server.url
    assert api(url, "/api/2.0/mlflow/experiments/search?max_results=1") == 401, "anonymous calls are refused"
    assert api(url, "/health") == 200, "the health check stays open"
    unlock = server_cli("start", "--dir", srv, "--no-auth")
    assert unlock.returncode == 2 and "not with --no-auth; stop it first" in unlock.stderr, unlock.stderr

    added = server_cli("user", "add", "--dir", srv, "alice", "--write-credentials", str(tmp_path / "alice.cred"))
    assert added.returncode == 0, added.stderr
    (line,) = [line for line in added.stdout.splitlines() if line.startswith("password for alice: ")]
    alice_pw = line.removeprefix("password for alice: ")
    assert f"mlflow_tracking_password = {alice_pw}" in (tmp_path / "alice.cred").read_text()
    bob_pw = "bob-reads-everything"
    added = subprocess.run([*server_cli_prefix(), "user", "add", "--dir", srv, "bob", "--password-stdin"],
                           input=bob_pw + "\n", capture_output=True, text=True, timeout=300)  # fmt: skip
    assert added.returncode == 0 and bob_pw not in added.stdout, added.stderr
    listed = server_cli("user", "list", "--dir", srv)
    assert {"admin  (admin)", "alice", "bob"} <= set(listed.stdout.splitlines()), listed.stdout
    status = server_cli("status", "--dir", srv)
    assert "auth           on (basic-auth), " in status.stdout and " users" in status.stdout, status.stdout

    out = tmp_path / "alice-run"
    trained = subprocess.run(
        [TRAIN, *FAST, "tracking=server", f"tracking.uri={url}",
         "tracking.experiment=alices-digits", f"paths.output_dir={out}"],
        capture_output=True, text=True, timeout=900, env=env_as("alice", alice_pw),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    run_id = json.loads((out / "tracking" / "run.json").read_text())["run_id"]
    from mlflow.tracking import MlflowClient

    run = MlflowClient(url).get_run(run_id)  # as the admin
    assert run.info.status == "FINISHED" and "val/top1" in run.data.metrics

    get = f"/api/2.0/mlflow/runs/get?run_id={run_id}"

    def bob_deletes() -> int:
        return api(url, "/api/2.0/mlflow/runs/delete", "bob", bob_pw, {"run_id": run_id})

    def bob_tags() -> int:
        return api(url, "/api/2.0/mlflow/runs/set-tag", "bob", bob_pw, {"run_id": run_id, "key": "by", "value": "bob"})

    assert api(url, get, "bob", bob_pw) == 200, "READ is everyone's floor"
    assert bob_deletes() == 403, "bob may not delete alice's run"
    assert bob_tags() == 403
    assert server_cli("grant", "--dir", srv, "bob", "alices-digits", "EDIT").returncode == 0
    assert bob_tags() == 200, "EDIT lets bob write"
    assert bob_deletes() == 403, "EDIT is not MANAGE"
    assert server_cli("revoke", "--dir", srv, "bob", "alices-digits").returncode == 0
    assert bob_tags() == 403, "revoked"
    assert api(url, get, "alice", "not-alices-password") == 401

    started = time.monotonic()
    refused = subprocess.run(
        [TRAIN, *FAST, "tracking=server", f"tracking.uri={url}", f"paths.output_dir={tmp_path / 'wrong'}"],
        capture_output=True, text=True, timeout=120, env=env_as("alice", "not-alices-password"),
    )  # fmt: skip
    took = time.monotonic() - started
    said = (refused.stdout + refused.stderr).strip().splitlines()
    assert refused.returncode != 0 and took < 30 and len(said) <= 3, (took, said)
    assert "refused user 'alice' (401" in said[-1] and "MLFLOW_TRACKING_PASSWORD" in said[-1], said

    assert server_cli("user", "remove", "--dir", srv, "bob").returncode == 0
    refused_everywhere(url, get, "bob", bob_pw)


def refused_everywhere(url: str, path: str, user: str, password: str) -> None:
    """Wait until every worker refuses `user:password` (each caches a good check for AUTH_CACHE_TTL_S)."""
    deadline, refusals = time.monotonic() + AUTH_CACHE_TTL_S + 60, 0
    while refusals < 8:  # in a row: with 2 workers, both have answered
        assert time.monotonic() < deadline, f"{user}'s old password still works after {AUTH_CACHE_TTL_S + 60} s"
        refusals = refusals + 1 if api(url, path, user, password) == 401 else 0
        time.sleep(0.5)


def server_cli_prefix() -> list[str]:
    return [sys.executable, "-m", "phiscale.cli.server"]


@pytest.mark.slow
def test_a_password_changed_mid_run_keeps_the_journal_and_sync_sends_it_later(pg_server, server_cli, tmp_path):
    srv, url = str(pg_server.dir), pg_server.url
    old_pw = "carols-first-password"
    added = subprocess.run([*server_cli_prefix(), "user", "add", "--dir", srv, "carol", "--password-stdin"],
                           input=old_pw, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert added.returncode == 0, added.stderr
    out = tmp_path / "carol-run"
    journal = Journal(out / "tracking")
    record = RunRecord.new(url, "carols", "rotated")
    record.save(journal.dir)
    journal.append("run", experiment="carols", run_name="rotated", tags={}, start_ms=now_ms())
    journal.append("metrics", values=[["loss", 1.0, now_ms(), 0]])
    lines, tries = [], []
    with signed_in({"MLFLOW_TRACKING_USERNAME": "carol", "MLFLOW_TRACKING_PASSWORD": old_pw}):
        sender = Sender(journal, record, url, output_dir=out, heartbeat_s=None, retry_max_s=3, log=lines.append)
        send = sender._send
        sender._send = lambda batch: (tries.append(time.monotonic()), send(batch))[1]
        sender.acquire()
        sender.start()
        deadline = time.monotonic() + 120
        while journal.backlog and time.monotonic() < deadline:
            time.sleep(0.1)
        assert journal.backlog == 0 and record.run_id, lines
        old_pw_last_accepted = time.monotonic()  # the sender has nothing left to send: its last request is done
        passwd = server_cli("user", "passwd", "--dir", srv, "carol")
        assert passwd.returncode == 0, passwd.stderr
        new_pw = passwd.stdout.strip().removeprefix("password for carol: ")
        # A worker that accepted the old password keeps that check for AUTH_CACHE_TTL_S (MLflow's TTLCache: from
        # when it was made, a hit does not renew it), and which worker takes a request depends on the machine's
        # load: the new steps are journaled once every such check has expired, so the sender's next request is
        # refused whichever worker takes it (a loaded run once sent them all through a worker that still held it).
        time.sleep(max(0.0, old_pw_last_accepted + AUTH_CACHE_TTL_S + 1 - time.monotonic()))
        refused_everywhere(url, f"/api/2.0/mlflow/runs/get?run_id={record.run_id}", "carol", old_pw)
        for step in range(1, 51):
            journal.append("metrics", values=[["loss", 1.0 / step, now_ms(), step]])
        journal.append("status", status="FINISHED")
        deadline = time.monotonic() + 60
        while not sender.locked_out and time.monotonic() < deadline:
            time.sleep(0.1)
        first = len(tries)
        time.sleep(4)  # the retry pace is what is measured here: about one try per retry_max_s
        assert len(tries) - first <= 3, f"{len(tries) - first} tries in 4 s: a tight retry loop"
        assert sender.stop(1) > 0, "nothing may be dropped while the server refuses"
        sender._thread.join(30)  # abandoned: it ends at once
        sender.release()
    assert [line for line in lines if "refused user 'carol' (401" in line and "phiscale-sync" in line], lines
    assert len(lines) == 1, lines
    journal.close()

    synced = subprocess.run([SYNC, str(out)], capture_output=True, text=True, timeout=300,
                            env=env_as("carol", new_pw))  # fmt: skip
    assert synced.returncode == 0, synced.stdout + synced.stderr
    from mlflow.tracking import MlflowClient

    history = MlflowClient(url).get_metric_history(record.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(51)), "every point arrived once"
    assert MlflowClient(url).get_run(record.run_id).info.status == "FINISHED"


# ---------------------------------------------------------------- TLS -----
@pytest.mark.slow
def test_tls_serves_https_with_a_kept_certificate_and_prints_its_export(tmp_path, server_cli, monkeypatch):
    srv, port = tmp_path / "srv", free_port()
    started = server_cli("start", "--dir", str(srv), "--db", "sqlite", "--workers", "1", "--port", str(port), "--tls")
    try:
        assert started.returncode == 0, started.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines())
        url, cert = exports["MLFLOW_TRACKING_URI"], exports["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        assert url == f"https://127.0.0.1:{port}" and cert == str(srv / "tls" / "cert.pem")
        admin = ("admin", admin_password(srv))
        assert api(url, "/api/2.0/mlflow/experiments/search?max_results=1", *admin, cafile=cert) == 200
        assert api(url, "/api/2.0/mlflow/experiments/search?max_results=1", cafile=cert) == 401
        monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH", raising=False)
        with pytest.raises(PhiscaleError, match="MLFLOW_TRACKING_SERVER_CERT_PATH="):
            check_reachable(url, 10)
        with signed_in({"MLFLOW_TRACKING_SERVER_CERT_PATH": cert, "MLFLOW_TRACKING_USERNAME": admin[0],
                        "MLFLOW_TRACKING_PASSWORD": admin[1]}):  # fmt: skip
            from mlflow.tracking import MlflowClient

            check_reachable(url, 30)
            MlflowClient(url).create_experiment("over-tls")
        kept = json.loads((srv / STATE_FILE).read_text())
        before = Path(cert).read_bytes()
        assert server_cli("stop", "--dir", str(srv)).returncode == 0
        again = server_cli("start", "--dir", str(srv))
        assert again.returncode == 0 and again.stdout == started.stdout, again.stderr
        now = json.loads((srv / STATE_FILE).read_text())
        assert (now["secret_key"], now["admin_password"]) == (kept["secret_key"], kept["admin_password"])
        assert Path(cert).read_bytes() == before, "clients keep trusting the same certificate"
        assert api(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=over-tls", *admin, cafile=cert) == 200
        for name in (STATE_FILE, "basic_auth.ini", "basic_auth.db", "tls/key.pem"):
            assert oct((srv / name).stat().st_mode & 0o777) == "0o600", name
    finally:
        server_cli("stop", "--dir", str(srv))
