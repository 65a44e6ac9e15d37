"""One real PostgreSQL + `mlflow server` (started through `phiscale-server start`, so locked by
MLflow's basic-auth app) shared by the tests that need it, in a directory the `postgres` OS user can
reach, on free ports. While it runs, this process (and what it starts) signs in as its admin through
MLflow's own MLFLOW_TRACKING_USERNAME / _PASSWORD. The fixtures are registered by tests/conftest.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from phiscale.server.auth import ADMIN
from phiscale.server.process import free_port
from phiscale.server.stack import STATE_FILE

SERVER_CLI = [sys.executable, "-m", "phiscale.cli.server"]


def server_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `phiscale-server ARGS` (not installed in the venv yet: through -m); `env` adds variables."""
    return subprocess.run(
        [*SERVER_CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def server_dir(prefix: str) -> Path:
    """A fresh folder under /tmp: pytest's tmp_path sits below a mode-0700 folder PostgreSQL's
    OS user cannot enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o711)
    return path


@dataclass(frozen=True)
class RunningServer:
    dir: Path
    url: str
    port: int
    startup_log: str
    admin_password: str = ""

    @property
    def admin_env(self) -> dict[str, str]:
        """MLflow's sign-in variables for the server's admin."""
        return {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": self.admin_password}


def admin_password(directory: Path) -> str:
    """The admin password phiscale-server keeps in DIR (what `user add` and `grant` sign in with)."""
    return json.loads((directory / STATE_FILE).read_text())["admin_password"]


@contextlib.contextmanager
def signed_in(env: dict[str, str]):
    """This process's MLflow clients (and the processes it starts) sign in with `env` meanwhile."""
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(name="server_cli", scope="session")
def server_cli_fixture():
    """`server_cli(*args, env=None)`: run phiscale-server in a subprocess."""
    return server_cli


@pytest.fixture(name="server_dir", scope="session")
def server_dir_fixture():
    """`server_dir(prefix)`: a fresh folder the postgres OS user can reach (the caller removes it)."""
    return server_dir


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL-backed tracking server (auth on), 2 workers, on a free port; signed in as
    its admin while it runs; stopped at the end."""
    base = server_dir("phiscale-pg-")
    port = free_port()
    started = server_cli("start", "--dir", str(base / "srv"), "--port", str(port), "--workers", "2")
    assert started.returncode == 0, started.stderr
    url = started.stdout.strip().removeprefix("export MLFLOW_TRACKING_URI=")
    print(f"\n{started.stderr.strip()}")
    server = RunningServer(base / "srv", url, port, started.stderr, admin_password(base / "srv"))
    try:
        with signed_in(server.admin_env):
            yield server
    finally:
        server_cli("stop", "--dir", str(base / "srv"))
        shutil.rmtree(base, ignore_errors=True)
