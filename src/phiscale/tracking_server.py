"""A production-shaped MLflow tracking server in one directory: PostgreSQL 15 + `mlflow server`.

A sweep's SLURM array has dozens to hundreds of jobs writing to one tracking store at once;
sqlite serialises them on one file lock. `phiscale-server` runs a private PostgreSQL cluster
and `mlflow server` (proxied artifacts) from one directory, with nothing outside it touched:

    phiscale-server start --dir /srv/mlflow            # prints: export MLFLOW_TRACKING_URI=http://...
    phiscale-server status --dir /srv/mlflow           # URI, pids, uptime, runs, health of each part
    phiscale-server stop --dir /srv/mlflow             # exactly what start started

    DIR/phiscale-server.json   backend, host, ports, workers, the mlflow pid (mode 0600: it holds
                               the database password)
    DIR/pg/  DIR/run/          the PostgreSQL cluster and its unix socket (owned by the OS user
                               `postgres` when started as root); it listens on 127.0.0.1 only
    DIR/mlflow.db              the store with `--db sqlite`
    DIR/artifacts/             the proxied artifact store (`mlflow-artifacts:/` URIs)
    DIR/logs/                  initdb.log, postgres.log, mlflow.log

Keep DIR on a disk local to the server node (sqlite's WAL and PostgreSQL both need local file
locking and shared memory, not NFS); only the server reads and writes it.

Concurrency settings (MLflow 3.17.2; numbers from benchmarks/tracking_load.py):
- sqlite allows one writer at a time for the whole file. MLflow runs `PRAGMA busy_timeout =
  20000` at the start of every session (mlflow/store/db/utils.py, `make_managed_session`),
  which replaces pysqlite's `?timeout=` from the URI, so a writer waits up to 20 s for the lock
  and then fails with "database is locked"; the busy timeout is not configurable. We put the
  file in WAL mode (`PRAGMA journal_mode=WAL`, stored in the file so every later connection
  uses it): readers no longer block the writer nor the writer the readers. Measured on 2 cores
  (README table), writers logging every 0.2-0.5 s: sqlite used directly keeps up with 64, is 8x
  slower at 96 and starves writers at 128; `mlflow server` on sqlite fails from 96 (its 5 + 10
  pooled connections run out, clients retry, a retried create_run makes a duplicate run). Use
  sqlite for one user or a small sweep.
- PostgreSQL locks rows, not the database. Each uvicorn worker runs Flask handlers in AnyIO's
  default thread pool (40 threads, mlflow/server/fastapi_app.py); SQLAlchemy's default pool
  (5 + 10 overflow, 30 s wait) would make the 16th concurrent request wait and then fail with
  "QueuePool limit ... reached". We set MLFLOW_SQLALCHEMYSTORE_POOL_SIZE / _MAX_OVERFLOW to
  one connection per thread and size PostgreSQL's max_connections for every worker's pools.
  Measured: 128 writers, no error, every run and point kept.
- Schema migrations run once, in the `mlflow server` process before its workers start
  (mlflow/cli `initialize_backend_stores`), so workers never race on them.
- uvicorn has no request timeout (a long checkpoint upload is never cut off server-side); see
  phiscale.mlflow_server.UVICORN_OPTS for the worker health-check allowance.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from phiscale.errors import PhiscaleError
from phiscale.mlflow_server import (
    MlflowServer,
    free_port,
    is_healthy,
    port_holder,
    port_is_free,
    process_start_ticks,
    stop_process_group,
)
from phiscale.paths import write_atomically
from phiscale.tracking.store import describe_error

BACKENDS = ("postgres", "sqlite")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_WORKERS = 4  # `mlflow server`'s own default
DEFAULT_STARTUP_TIMEOUT_S = 180.0  # measured 15-50 s for mlflow server on a busy 2-core node
STATE_FILE = "phiscale-server.json"
LOCK_FILE = ".phiscale-server.lock"

PG_BIN_DIR = Path(os.environ.get("PHISCALE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_APT_PACKAGE = "postgresql"  # Debian 12: PostgreSQL 15 under /usr/lib/postgresql/15
PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root: as root we run it as this user
PG_SUPERUSER = "postgres"
MLFLOW_DB = MLFLOW_ROLE = "mlflow"
SQLITE_JOURNAL_MODES = {"wal": "WAL", "delete": "DELETE"}
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with the final NUL

# One pooled connection per AnyIO worker thread (40 per uvicorn worker), see the docstring.
POOL_ENV = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "8", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "32"}
CONNECTIONS_PER_ENGINE = 8 + 32
ENGINES_PER_WORKER = 2  # the tracking store and the model registry store each open a pool
RESERVED_CONNECTIONS = 20  # the mlflow CLI's own engines, status queries, psql


def max_connections(workers: int) -> int:
    """PostgreSQL's max_connections for `workers` uvicorn workers at full pools."""
    return workers * ENGINES_PER_WORKER * CONNECTIONS_PER_ENGINE + RESERVED_CONNECTIONS


def prepare_sqlite_store(path: Path, journal_mode: str = "wal") -> str:
    """Create (or keep) the sqlite file in `journal_mode` (WAL; the file remembers it); its URI.
    `delete` is sqlite's default rollback journal, for comparison (benchmarks/tracking_load.py)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        mode = conn.execute(f"PRAGMA journal_mode={SQLITE_JOURNAL_MODES[journal_mode]}").fetchone()[0]
    if mode != journal_mode:
        raise PhiscaleError(
            f"sqlite kept journal_mode={mode} for {path} (wanted {journal_mode}); put the store on a local disk"
        )
    return f"sqlite:///{path}"


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
        return f"http://{client_host(self.host)}:{self.port}"


ALL_INTERFACES = ("0.0.0.0", "::", "")


def client_host(host: str) -> str:
    """The name clients use for a server bound to `host` (all interfaces -> this node's name)."""
    return socket.gethostname() if host in ALL_INTERFACES else host


def allowed_hosts(host: str, extra: str | None) -> str | None:
    """`mlflow server --allowed-hosts`: MLflow's defaults (localhost, private IPs), this node's
    names when serving on all interfaces (the URI start prints uses one), and `extra`. None keeps
    MLflow's defaults; a list replaces them, so they are repeated here."""
    names = sorted({socket.gethostname(), socket.getfqdn()}) if host in ALL_INTERFACES else []
    if not names and not extra:
        return None
    from mlflow.server.security_utils import get_default_allowed_hosts

    ours = [pattern for name in names for pattern in (name, f"{name}:*")]
    return ",".join([*get_default_allowed_hosts(), *ours, *(extra.split(",") if extra else [])])


# ---------------------------------------------------------------- PostgreSQL -----
class Postgres:
    """A private PostgreSQL cluster in DIR/pg, its socket in DIR/run, on 127.0.0.1:port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "pg"
        self.sockets = root / "run"
        self.log = root / "logs" / "postgres.log"
        self.initdb_log = root / "logs" / "initdb.log"

    # -- who runs it ------------------------------------------------------------
    @staticmethod
    def _owner() -> tuple[int, int] | None:
        """(uid, gid) to run as: the `postgres` OS user when we are root, else None (ourselves)."""
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(PG_OS_USER)
        except KeyError:
            raise PhiscaleError(
                f"no OS user {PG_OS_USER!r} to run PostgreSQL as (it refuses root); "
                f"apt-get install {PG_APT_PACKAGE} creates it"
            ) from None
        return entry.pw_uid, entry.pw_gid

    def _run(self, args: list[str], log: Path, timeout_s: float) -> subprocess.CompletedProcess:
        owner = self._owner()
        as_user = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
        with open(log, "ab") as out:
            return subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
                timeout=timeout_s,
                start_new_session=True,  # the postmaster must not share our terminal's signals
                check=False,
                **as_user,
            )

    def _give(self, *paths: Path) -> None:
        owner = self._owner()
        if owner:
            for path in paths:
                os.chown(path, *owner)

    @staticmethod
    def require_binaries() -> None:
        missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (PG_BIN_DIR / name).exists()]
        if missing:
            raise PhiscaleError(
                f"PostgreSQL 15 is not installed ({PG_BIN_DIR}/{missing[0]} is missing): "
                f"apt-get install {PG_APT_PACKAGE}, or set PHISCALE_PG_BIN to its bin directory"
            )
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise PhiscaleError(
                "the PostgreSQL driver is missing from this Python: pip install 'psycopg[binary]' "
                "(scripts/setup.sh installs it)"
            ) from None

    # -- state --------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def running(self) -> tuple[int, int] | None:
        """(pid, port) of this cluster's live postmaster, from DIR/pg/postmaster.pid."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None
        if comm != "postgres" or process_start_ticks(pid) is None:
            return None  # a stale file after a crash: the pid is gone, a zombie, or reused
        return pid, port

    # -- lifecycle ----------------------------------------------------------------
    def init(self) -> None:
        """initdb into DIR/pg: local socket trusted (the socket dir is private), TCP by password."""
        self._check_reachable_by_owner()
        for path in (self.data, self.sockets):
            path.mkdir(mode=0o700, exist_ok=True)
        self.log.parent.mkdir(exist_ok=True)
        self.initdb_log.touch()
        self.log.touch()
        self._give(self.data, self.sockets, self.initdb_log, self.log)
        # initdb wants a superuser password when any method is a password one; nobody uses it.
        pwfile = self.sockets / "initdb.pw"
        pwfile.write_text(secrets.token_urlsafe(24) + "\n")
        self._give(pwfile)
        try:
            result = self._run(
                [str(PG_BIN_DIR / "initdb"), "-D", str(self.data), "-U", PG_SUPERUSER, f"--pwfile={pwfile}",
                 "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                self.initdb_log,
                timeout_s=300,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise PhiscaleError(
                f"initdb failed (exit {result.returncode}) for {self.data}; see {self.initdb_log}: "
                f"{_tail(self.initdb_log, 3)}"
            )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'phiscale.conf'  # written by phiscale-server at each start\n")

    def start(self, port: int, workers: int, timeout_s: float) -> int:
        """Start on 127.0.0.1:`port` and wait until it accepts connections (pg_ctl -w); its pid."""
        socket_path = self.sockets / f".s.PGSQL.{port}"
        if len(str(socket_path)) > UNIX_SOCKET_PATH_MAX:
            raise PhiscaleError(
                f"{self.root} is too deep for PostgreSQL's unix socket ({socket_path} is over "
                f"{UNIX_SOCKET_PATH_MAX} characters); use a shorter --dir"
            )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": port,
            "unix_socket_directories": str(self.sockets),
            "max_connections": max_connections(workers),
        }
        conf = self.data / "phiscale.conf"
        conf.write_text("".join(f"{key} = {_pg_value(value)}\n" for key, value in settings.items()))
        self._give(conf)
        result = self._run(
            [str(PG_BIN_DIR / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
             "-w", "-t", str(int(timeout_s))],
            self.log,
            timeout_s=timeout_s + 30,
        )  # fmt: skip
        running = self.running()
        if result.returncode != 0 or running is None:
            raise PhiscaleError(
                f"PostgreSQL did not start on 127.0.0.1:{port} (pg_ctl exit {result.returncode}); "
                f"see {self.log}: {_tail(self.log, 3)}"
            )
        return running[0]

    def stop(self) -> None:
        result = self._run(
            [str(PG_BIN_DIR / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60"],
            self.log,
            timeout_s=90,
        )
        if result.returncode != 0 and self.running():
            raise PhiscaleError(
                f"PostgreSQL in {self.data} did not stop; see {self.log}: {_tail(self.log, 3)}"
            )

    def ensure_database(self, port: int, password: str) -> None:
        """The `mlflow` role (with `password`) and its database; creates what is missing."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(self.sockets), port=port, user=PG_SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            role = sql.Identifier(MLFLOW_ROLE)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MLFLOW_ROLE,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (MLFLOW_DB,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(MLFLOW_DB), role))

    def _check_reachable_by_owner(self) -> None:
        """The `postgres` user must be able to walk down to DIR: name the first folder that stops it."""
        owner = self._owner()
        if owner is None:
            return
        for folder in reversed([self.root, *self.root.parents]):
            info = folder.stat()
            if not (info.st_mode & 0o001 or info.st_uid == owner[0]):
                if folder == self.root:
                    folder.chmod(info.st_mode | 0o001)  # ours: let postgres pass through (not list)
                    continue
                raise PhiscaleError(
                    f"the {PG_OS_USER} OS user cannot reach {self.root}: {folder} is mode "
                    f"{oct(info.st_mode & 0o777)}; use a --dir outside it or chmod o+x {folder}"
                )


def sqlalchemy_url(port: int, password: str) -> str:
    return f"postgresql+psycopg://{MLFLOW_ROLE}:{password}@127.0.0.1:{port}/{MLFLOW_DB}"


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
    ) -> StartResult:
        """Start what is not running; refuse (PhiscaleError) when DIR or a port belongs to another server."""
        _check_options(backend, port, pg_port, workers)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        with self._locked():
            recorded = self.state()
            if recorded is not None and backend is not None and backend != recorded.backend:
                raise PhiscaleError(
                    f"{self.root} holds a {recorded.backend} tracking server; pass --db {recorded.backend} "
                    f"or use another --dir for a {backend} one"
                )
            if recorded is not None and recorded.mlflow_alive():
                return self._already_running(recorded, host, port, pg_port, timeout_s)
            state = _wanted_state(recorded, backend, host, port, pg_port, workers, allowed_hosts)
            _refuse_taken_port(state.port, state.host, "--port")
            started = time.monotonic()
            result = StartResult(url=state.url, already_running=False)
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
            return result

    def _start_mlflow(self, state: State, timeout_s: float) -> int:
        """`mlflow server` on the store, detached in its own process group; its pid (= group id)."""
        if state.backend == "postgres":
            store_uri, env = sqlalchemy_url(state.pg_port, state.db_password), POOL_ENV
        else:
            store_uri, env = prepare_sqlite_store(self.root / "mlflow.db"), {}
        server = MlflowServer(
            self.root,
            host=state.host,
            port=state.port,
            backend_store_uri=store_uri,
            artifacts_destination=self.root / "artifacts",
            workers=state.workers,
            startup_timeout_s=timeout_s,
            log_path=self.log_dir / "mlflow.log",
            env=env,
            allowed_hosts=allowed_hosts(state.host, state.allowed_hosts),
        )
        return server.start().detach()

    def _already_running(
        self, state: State, host: str | None, port: int | None, pg_port: int | None, timeout_s: float
    ) -> StartResult:
        asked = {
            "--host": (host, state.host),
            "--port": (port, state.port),
            "--pg-port": (pg_port, state.pg_port),
        }
        clash = [
            f"{flag} {want}" for flag, (want, have) in asked.items() if want is not None and want != have
        ]
        if clash:
            raise PhiscaleError(
                f"{self.root} already runs a server at {state.url} (pid {state.mlflow_pid}), not at "
                f"{', '.join(clash)}; stop it first (phiscale-server stop --dir {self.root}) or use another --dir"
            )
        result = StartResult(url=state.url, already_running=True)
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
        status = ServerStatus(self.root, state.backend, state.url)
        alive = state.mlflow_alive()
        healthy = alive and is_healthy(f"http://{_probe_host(state.host)}:{state.port}", timeout=5.0)
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


def _probe_host(host: str) -> str:
    return "::1" if host == "::" else "127.0.0.1" if host in ALL_INTERFACES else host


def _pg_value(value: object) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _tail(path: Path, lines: int) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
