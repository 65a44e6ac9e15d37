"""The server's database: a sqlite store put in WAL mode (kept by the file), PostgreSQL sized for
every worker's pools, values quoted for postgresql.conf. The PostgreSQL cluster itself runs in the
stack's tests (tests/server/test_stack.py) and the chaos test."""

from __future__ import annotations

import contextlib
import sqlite3

from phiscale.server.database import (
    CONNECTIONS_PER_ENGINE,
    ENGINES_PER_WORKER,
    POOL_ENV,
    RESERVED_CONNECTIONS,
    _pg_value,
    max_connections,
    prepare_sqlite_store,
    sqlalchemy_url,
)


def test_a_sqlite_store_is_put_in_wal_mode_and_the_file_keeps_it(tmp_path):
    path = tmp_path / "sub" / "mlflow.db"
    uri = prepare_sqlite_store(path)
    assert uri == f"sqlite:///{path.resolve()}"
    with contextlib.closing(sqlite3.connect(path)) as conn:  # a new connection, no PRAGMA of ours
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    prepare_sqlite_store(path, journal_mode="delete")  # the rollback journal, for the benchmark's comparison
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_max_connections_covers_every_workers_full_pools():
    pool = int(POOL_ENV["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(POOL_ENV["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
    assert pool == CONNECTIONS_PER_ENGINE == 40, "one connection per AnyIO thread of a uvicorn worker"
    assert max_connections(4) == 4 * ENGINES_PER_WORKER * 40 + RESERVED_CONNECTIONS == 500
    assert max_connections(1) < max_connections(2)


def test_settings_and_urls_are_quoted_for_postgres():
    assert _pg_value(340) == "340" and _pg_value("127.0.0.1") == "'127.0.0.1'" and _pg_value("it's") == "'it''s'"
    assert sqlalchemy_url(5433, "pw") == "postgresql+psycopg://mlflow:pw@127.0.0.1:5433/mlflow"
