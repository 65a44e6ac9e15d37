"""The tracking server's database: a private PostgreSQL 15 cluster in DIR/pg (or a sqlite file in WAL
mode), sized for the MLflow server in front of it.

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
  phiscale.server.process.UVICORN_OPTS for the worker health-check allowance.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import sqlite3
import subprocess
from pathlib import Path

from phiscale.errors import PhiscaleError
from phiscale.server.process import process_start_ticks

PG_BIN_DIR = Path(os.environ.get("PHISCALE_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_APT_PACKAGE = "postgresql"  # Debian 12: PostgreSQL 15 under /usr/lib/postgresql/15
PG_OS_USER = "postgres"  # PostgreSQL refuses to run as root: as root we run it as this user
PG_SUPERUSER = "postgres"
MLFLOW_DB = MLFLOW_ROLE = "mlflow"
AUTH_DB = "mlflow_auth"  # the basic-auth app's users and grants: its own database, same role
SQLITE_JOURNAL_MODES = {"wal": "WAL", "delete": "DELETE"}
UNIX_SOCKET_PATH_MAX = 107  # sun_path is 108 bytes on Linux, with the final NUL

# One pooled connection per AnyIO worker thread (40 per uvicorn worker), see the docstring.
POOL_ENV = {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "8", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "32"}
CONNECTIONS_PER_ENGINE = 8 + 32
ENGINES_PER_WORKER = 3  # the tracking, model registry and basic-auth stores each open a pool
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

    def ensure_database(self, port: int, password: str, databases: tuple[str, ...] = (MLFLOW_DB, AUTH_DB)) -> None:
        """The `mlflow` role (with `password`) and its `databases`; creates what is missing."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(self.sockets), port=port, user=PG_SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            role = sql.Identifier(MLFLOW_ROLE)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MLFLOW_ROLE,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)))
            for name in databases:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), role))

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


def sqlalchemy_url(port: int, password: str, database: str = MLFLOW_DB) -> str:
    return f"postgresql+psycopg://{MLFLOW_ROLE}:{password}@127.0.0.1:{port}/{database}"



def _pg_value(value: object) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _tail(path: Path, lines: int) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
