"""A production-shaped MLflow tracking server in one directory: PostgreSQL 15 + `mlflow server`.

A sweep's SLURM array has dozens to hundreds of jobs writing to one tracking store at once;
sqlite serialises them on one file lock. `phiscale-server` runs a private PostgreSQL cluster
and `mlflow server` (proxied artifacts) from one directory, with nothing outside it touched:

    phiscale-server start --dir /srv/mlflow            # prints: export MLFLOW_TRACKING_URI=http://...
    phiscale-server status --dir /srv/mlflow           # URI, pids, uptime, runs, users, health
    phiscale-server stop --dir /srv/mlflow             # exactly what start started

    DIR/phiscale-server.json   backend, host, ports, workers, the mlflow pid, auth and TLS (mode
                               0600: it holds the database and admin passwords, the secret key)
    DIR/basic_auth.ini         the basic-auth app's settings (phiscale.server.auth), mode 0600
    DIR/tls/                   the self-signed certificate of `--tls`
    DIR/pg/  DIR/run/          the PostgreSQL cluster and its unix socket (owned by the OS user
                               `postgres` when started as root); it listens on 127.0.0.1 only
    DIR/mlflow.db              the store with `--db sqlite`
    DIR/artifacts/             the proxied artifact store (`mlflow-artifacts:/` URIs)
    DIR/logs/                  initdb.log, postgres.log, mlflow.log

Keep DIR on a disk local to the server node (sqlite's WAL and PostgreSQL both need local file
locking and shared memory, not NFS); only the server reads and writes it.


The database half (PostgreSQL or sqlite, and the concurrency settings) is phiscale.server.database;
the `mlflow server` process group is phiscale.server.process; users, grants and TLS are
phiscale.server.auth.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phiscale.errors import PhiscaleError
from phiscale.paths import write_atomically
from phiscale.server import auth as auth_app
from phiscale.server.database import (
    AUTH_DB,
    MLFLOW_DB,
    MLFLOW_ROLE,
    POOL_ENV,
    Postgres,
    prepare_sqlite_store,
    sqlalchemy_url,
)
from phiscale.server.process import (
    MlflowServer,
    allowed_hosts,
    client_host,
    free_port,
    is_healthy,
    port_holder,
    port_is_free,
    probe_host,
    process_start_ticks,
    stop_process_group,
)
from phiscale.tracking.store import describe_error

BACKENDS = ("postgres", "sqlite")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 4  # `mlflow server`'s own default
DEFAULT_STARTUP_TIMEOUT_S = 180.0  # measured 15-50 s for mlflow server on a busy 2-core node
STATE_FILE = "phiscale-server.json"
LOCK_FILE = ".phiscale-server.lock"


# ---------------------------------------------------------------- the directory's record -----
@dataclass
class State:
    """What DIR/phiscale-server.json remembers between commands."""

    backend: str
    host: str
    port: int
    workers: int
    pg_port: int | None = None
    db_password: str | None = None
    mlflow_pid: int | None = None
    mlflow_start_ticks: int | None = None
    mlflow_started_at: float | None = None
    allowed_hosts: str | None = None
    auth: bool = True
    default_permission: str = "READ"
    secret_key: str | None = None
    admin_password: str | None = None
    tls: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None

    @classmethod
    def load(cls, path: Path) -> State | None:
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as err:
            raise PhiscaleError(f"{path} is not a phiscale-server record ({err}); move it away") from None

    def save(self, path: Path) -> None:
        write_atomically(path, json.dumps(asdict(self), indent=2), mode=0o600)  # it holds the DB password

    def mlflow_alive(self) -> bool:
        """The recorded server process still runs (same pid, same start time: not a reused pid)."""
        return self.mlflow_pid is not None and process_start_ticks(self.mlflow_pid) == self.mlflow_start_ticks

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{client_host(self.host)}:{self.port}"


# ---------------------------------------------------------------- the managed server -----
@dataclass
class PartStatus:
    name: str
    running: bool
    healthy: bool
    pid: int | None = None
    uptime_s: float | None = None
    detail: str = ""


@dataclass
class ServerStatus:
    root: Path
    backend: str
    url: str
    parts: list[PartStatus] = field(default_factory=list)
    experiments: int | None = None
    runs: int | None = None
    counts_error: str = ""
    auth: bool = False
    users: int | None = None

    @property
    def running(self) -> bool:
        return any(part.running for part in self.parts)

    @property
    def healthy(self) -> bool:
        return all(part.healthy for part in self.parts)


@dataclass
class StartResult:
    url: str
    already_running: bool
    startup_s: float = 0.0
    started: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cert_path: str | None = None


class TrackingServer:
    """The tracking server kept in one directory: start, stop and status from any process."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.state_path = self.root / STATE_FILE
        self.log_dir = self.root / "logs"
        self.postgres = Postgres(self.root)

    def state(self) -> State | None:
        return State.load(self.state_path)

    @property
    def url(self) -> str:
        state = self.state()
        if state is None:
            raise PhiscaleError(f"{self.root} holds no tracking server ({STATE_FILE} is missing)")
        return state.url

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One start/stop at a time per directory (two sbatch scripts may both call start)."""
        with open(self.root / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # -- start ----------------------------------------------------------------------
    def start(
        self,
        *,
        backend: str | None = None,
        host: str | None = None,
        port: int | None = None,
        pg_port: int | None = None,
        workers: int | None = None,
        allowed_hosts: str | None = None,
        timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        **auth_options,
    ) -> StartResult:
        """Start what is not running; refuse (PhiscaleError) when DIR or a port belongs to another
        server. `auth_options`: auth, default_permission, tls, tls_cert, tls_key (auth.settle_options)."""
        _check_options(backend, port, pg_port, workers)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(exist_ok=True)
            (self.root / LOCK_FILE).touch()
        except OSError as err:
            raise PhiscaleError(f"cannot use --dir {self.root}: {err.strerror}; pick a directory you can write") from None
        with self._locked():
            recorded = self.state()
            if recorded is not None and backend is not None and backend != recorded.backend:
                raise PhiscaleError(
                    f"{self.root} holds a {recorded.backend} tracking server; pass --db {recorded.backend} "
                    f"or use another --dir for a {backend} one"
                )
            if recorded is not None and recorded.mlflow_alive():
                return self._already_running(recorded, host, port, pg_port, timeout_s, auth_options)
            state = _wanted_state(recorded, backend, host, port, pg_port, workers, allowed_hosts)
            warnings = auth_app.settle_options(state, recorded, **auth_options)
            _refuse_taken_port(state.port, state.host, "--port")
            started = time.monotonic()
            result = StartResult(url=state.url, already_running=False, warnings=warnings)
            pg_started_here = state.backend == "postgres" and self._start_postgres(state, timeout_s, result)
            try:
                state.save(self.state_path)
                state.mlflow_pid = self._start_mlflow(state, timeout_s)
            except BaseException:
                if pg_started_here:
                    self.postgres.stop()
                raise
            state.mlflow_start_ticks = process_start_ticks(state.mlflow_pid)
            state.mlflow_started_at = time.time()
            state.save(self.state_path)
            result.started.append(f"mlflow server (pid {state.mlflow_pid}, {state.workers} workers)")
            result.startup_s = time.monotonic() - started
            result.cert_path = state.tls_cert
            return result

    def _start_mlflow(self, state: State, timeout_s: float) -> int:
        """`mlflow server` on the store, detached in its own process group; its pid (= group id)."""
        if state.backend == "postgres":
            store_uri, env = sqlalchemy_url(state.pg_port, state.db_password), POOL_ENV
            auth_uri = sqlalchemy_url(state.pg_port, state.db_password, AUTH_DB)
        else:
            store_uri, env = prepare_sqlite_store(self.root / "mlflow.db"), {}
            (self.root / auth_app.AUTH_SQLITE).touch(mode=0o600)  # password hashes: ours alone
            auth_uri = prepare_sqlite_store(self.root / auth_app.AUTH_SQLITE)
        options = auth_app.server_options(self.root, state, auth_uri)
        server = MlflowServer(
            self.root,
            host=state.host,
            port=state.port,
            backend_store_uri=store_uri,
            artifacts_destination=self.root / "artifacts",
            workers=state.workers,
            startup_timeout_s=timeout_s,
            log_path=self.log_dir / "mlflow.log",
            env={**env, **options.pop("env", {})},
            allowed_hosts=allowed_hosts(state.host, state.allowed_hosts),
            **options,
        )
        return server.start().detach()

    def _already_running(
        self, state: State, host: str | None, port: int | None, pg_port: int | None, timeout_s: float,
        auth_options: dict,
    ) -> StartResult:
        asked = {
            "--host": (host, state.host),
            "--port": (port, state.port),
            "--pg-port": (pg_port, state.pg_port),
            "--auth": (auth_options.get("auth"), state.auth),
            "--default-permission": (auth_options.get("default_permission"), state.default_permission),
            "--tls": (auth_options.get("tls"), state.tls),
        }
        clash = [
            (flag if want else f"--no-{flag[2:]}") if isinstance(want, bool) else f"{flag} {want}"
            for flag, (want, have) in asked.items() if want is not None and want != have
        ]  # fmt: skip
        if clash:
            raise PhiscaleError(
                f"{self.root} already runs a server at {state.url} (pid {state.mlflow_pid}), not with "
                f"{', '.join(clash)}; stop it first (phiscale-server stop --dir {self.root}) or use another --dir"
            )
        result = StartResult(url=state.url, already_running=True, cert_path=state.tls_cert)
        if state.backend == "postgres" and self.postgres.running() is None:  # the database died under it
            self._start_postgres(state, timeout_s, result)
        return result

    def _start_postgres(self, state: State, timeout_s: float, result: StartResult) -> bool:
        """Bring the cluster up (initdb on first use) with the mlflow role; True when started here."""
        self.postgres.require_binaries()
        running = self.postgres.running()
        if running is not None:  # left running (mlflow stopped or crashed): keep it and its port
            state.pg_port = running[1]
            started_here = False
        else:
            if state.pg_port is None:
                state.pg_port = free_port("127.0.0.1")
            _refuse_taken_port(state.pg_port, "127.0.0.1", "--pg-port")
            if not self.postgres.initialized:
                self.postgres.init()
            pid = self.postgres.start(state.pg_port, state.workers, timeout_s)
            result.started.append(f"PostgreSQL (pid {pid}, 127.0.0.1:{state.pg_port})")
            started_here = True
        state.db_password = state.db_password or secrets.token_urlsafe(24)
        try:
            self.postgres.ensure_database(state.pg_port, state.db_password)
        except BaseException:
            if started_here:
                self.postgres.stop()
            raise
        return started_here

    # -- stop -----------------------------------------------------------------------
    def stop(self) -> list[str]:
        """Stop the server's process group, then PostgreSQL (fast mode); what was stopped."""
        if self.state() is None:
            raise PhiscaleError(f"{self.root} holds no tracking server ({STATE_FILE} is missing)")
        stopped = []
        with self._locked():
            state = self.state()
            if state.mlflow_alive():
                killed = stop_process_group(state.mlflow_pid)
                stopped.append(f"mlflow server (pid {state.mlflow_pid}{', killed' if killed else ''})")
            state.mlflow_pid = state.mlflow_start_ticks = state.mlflow_started_at = None
            state.save(self.state_path)
            running = self.postgres.running() if state.backend == "postgres" else None
            if running is not None:
                self.postgres.stop()
                stopped.append(f"PostgreSQL (pid {running[0]})")
        return stopped

    # -- status ---------------------------------------------------------------------
    def status(self) -> ServerStatus:
        state = self.state()
        if state is None:
            raise PhiscaleError(f"{self.root} holds no tracking server ({STATE_FILE} is missing)")
        status = ServerStatus(self.root, state.backend, state.url, auth=state.auth)
        alive = state.mlflow_alive()
        probe = f"{'https' if state.tls else 'http'}://{probe_host(state.host)}:{state.port}"
        healthy = alive and is_healthy(probe, timeout=5.0, cafile=state.tls_cert)
        if healthy and state.auth:
            with contextlib.suppress(PhiscaleError):
                status.users = len(self.admin(state).users())
        status.parts.append(
            PartStatus(
                "mlflow server",
                alive,
                healthy,
                pid=state.mlflow_pid if alive else None,
                uptime_s=time.time() - state.mlflow_started_at if alive and state.mlflow_started_at else None,
                detail=f"{state.workers} workers, /health {'ok' if healthy else 'not answering'}"
                if alive
                else "",
            )
        )
        if state.backend == "postgres":
            status.parts.append(self._postgres_status(state))
            if not status.parts[-1].running:
                status.counts_error = "the database is not running"
                return status
        try:
            status.experiments, status.runs = self._counts(state)
        except Exception as err:  # a stopped database, no tables yet
            status.counts_error = describe_error(err)
        return status

    def admin(self, state: State | None = None) -> auth_app.AuthAdmin:
        """The admin's client for users and grants (phiscale-server user / grant)."""
        state = state or self.state()
        if state is None or state.mlflow_pid is None or not state.mlflow_alive():
            raise PhiscaleError(f"{self.root} runs no tracking server; start it first (phiscale-server start --dir {self.root})")
        if not state.auth:
            raise PhiscaleError(f"{self.root} runs without authentication (--no-auth); restart it without --no-auth")
        return auth_app.AuthAdmin(state.url, state.admin_password, cert_path=state.tls_cert)

    def _postgres_status(self, state: State) -> PartStatus:
        running = self.postgres.running()
        if running is None:
            return PartStatus("PostgreSQL", False, False)
        try:
            with self._connect(state) as conn:
                uptime = conn.execute(
                    "SELECT extract(epoch FROM now() - pg_postmaster_start_time())"
                ).fetchone()
            return PartStatus("PostgreSQL", True, True, running[0], float(uptime[0]),
                              f"127.0.0.1:{running[1]}, accepting connections")  # fmt: skip
        except Exception as err:
            return PartStatus(
                "PostgreSQL", True, False, running[0], None, f"not accepting connections: {err}"
            )

    def _connect(self, state: State):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=state.pg_port, user=MLFLOW_ROLE, password=state.db_password,
            dbname=MLFLOW_DB, connect_timeout=5,
        )  # fmt: skip

    def _counts(self, state: State) -> tuple[int, int]:
        """(active experiments, runs) straight from the store's tables."""
        queries = (
            "SELECT count(*) FROM experiments WHERE lifecycle_stage = 'active'",
            "SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'",
        )
        if state.backend == "postgres":
            with self._connect(state) as conn:
                return tuple(conn.execute(q).fetchone()[0] for q in queries)  # type: ignore[return-value]
        uri = f"file:{self.root / 'mlflow.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            return tuple(conn.execute(q).fetchone()[0] for q in queries)  # type: ignore[return-value]


def _check_options(backend: str | None, port: int | None, pg_port: int | None, workers: int | None) -> None:
    if backend is not None and backend not in BACKENDS:
        raise PhiscaleError(f"--db {backend!r} is not one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise PhiscaleError(f"--workers {workers} must be at least 1")
    for flag, value in (("--port", port), ("--pg-port", pg_port)):
        if value is not None and not 0 < value < 65536:
            raise PhiscaleError(f"{flag} {value} is not a TCP port (1-65535)")


def _wanted_state(recorded: State | None, backend, host, port, pg_port, workers, allowed_hosts) -> State:
    """The options given, else what DIR recorded, else the defaults."""

    def pick(given, name: str, default):
        if given is not None:
            return given
        return getattr(recorded, name) if recorded is not None else default

    return State(
        backend=pick(backend, "backend", "postgres"),
        host=pick(host, "host", DEFAULT_HOST),
        port=pick(port, "port", DEFAULT_PORT),
        workers=pick(workers, "workers", DEFAULT_WORKERS),
        pg_port=pick(pg_port, "pg_port", None),
        db_password=recorded.db_password if recorded else None,
        allowed_hosts=pick(allowed_hosts, "allowed_hosts", None),
    )


def _refuse_taken_port(port: int, host: str, flag: str) -> None:
    if not port_is_free(port, host):
        holder = port_holder(port) or "another process"
        raise PhiscaleError(f"port {port} on {host} is taken by {holder}; pass another {flag} or stop it")
