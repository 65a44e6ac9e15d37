"""Start and stop a real `mlflow server` (sqlite backend, proxied artifacts) for tests and one-node use.

Shared tracking store for a cluster
-----------------------------------
Run one MLflow tracking server on a node every job can reach (the login node or a small
service node), with the run data in a database and the artifacts on shared storage that only
the server touches; jobs then log over HTTP and need no access to the database or the files:

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server \\
        --backend-store-uri sqlite:////shared/mlflow/mlflow.db \\
        --artifacts-destination /shared/mlflow/artifacts --serve-artifacts \\
        --host 0.0.0.0 --port 5000 --workers 2 \\
        --allowed-hosts 'login01,login01:5000,10.*'

    export MLFLOW_TRACKING_URI=http://login01:5000          # in ~/.bashrc or the sbatch script
    phiscale-train tracking=server ...                        # or the SLURM array of a sweep
    phiscale-report --experiment phiscale                     # reads the same URI

sqlite is enough for one server process and a few hundred runs; for many concurrent writers
use a real database (`--backend-store-uri postgresql://user:pass@dbhost/mlflow`, which needs
`psycopg2`). `--serve-artifacts` makes the server proxy every artifact upload and download
(`mlflow-artifacts:/` URIs), so compute nodes never write to the artifact store directly; the
destination can also be `s3://bucket/prefix`. `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` skips
the server's GenAI job runner, which tracking does not use. Startup takes 15-50 s on a busy
2-core node (measured: about 16 s idle here); wait for `curl http://login01:5000/health` to say
OK before submitting. `--host 0.0.0.0` exposes the server to the whole network without
authentication: keep it on a private cluster network (or add `--app-name basic-auth`) and list
the names clients use in `--allowed-hosts`.

In Python (tests, one-node experiments) use `MlflowServer`, which binds 127.0.0.1 on a free
port, runs the server in its own process group and stops the whole group:

    with MlflowServer(tmp_path) as server:
        client = mlflow.MlflowClient(server.url)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from phiscale.errors import PhiscaleError

DEFAULT_STARTUP_TIMEOUT_S = 120.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when `url/health` answers 200 (the tracking server's readiness endpoint)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until_reachable(uri: str, timeout_s: float) -> Exception | None:
    """Poll `uri/health` until it answers or `timeout_s` passes; None when reachable, else the
    last error. Any HTTP answer counts (a proxy in front may not route /health)."""
    url = uri.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout_s
    error: Exception | None = TimeoutError(f"no answer within {timeout_s:.0f} s")
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=max(0.5, deadline - time.monotonic())):
                return None
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, OSError) as err:
            error = err
        time.sleep(0.5)
    return error


class MlflowServer:
    """One `mlflow server` process group on `host:port`, data under `root` (db + artifacts + log)."""

    def __init__(
        self,
        root: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        backend_store_uri: str | None = None,
        artifacts_destination: str | Path | None = None,
        workers: int = 1,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    ) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.artifacts_destination = str(artifacts_destination or self.root / "artifacts")
        self.workers = workers
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.root / "server.log"
        self.startup_s: float | None = None  # how long the last start took
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("MlflowServer has no port until start() is called")
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        mlflow_script = Path(sys.executable).with_name("mlflow")
        prog = [str(mlflow_script)] if mlflow_script.exists() else [sys.executable, "-m", "mlflow"]
        return [
            *prog,
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--artifacts-destination",
            self.artifacts_destination,
            "--serve-artifacts",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    def start(self) -> MlflowServer:
        """Launch the server in a new session (its own process group) and wait for /health."""
        if self._process is not None:
            raise RuntimeError(f"MlflowServer at {self.url} is already started")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        if is_healthy(self.url, timeout=1.0):
            raise PhiscaleError(f"something already answers at {self.url}; pick another port")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        assert self._process is not None
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self._process.returncode} before it was ready; "
                    f"its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            if is_healthy(self.url, timeout=2.0):
                return
            if time.monotonic() - started > self.startup_timeout_s:
                raise TimeoutError(
                    f"mlflow server at {self.url} was not ready after {self.startup_timeout_s:.0f} s; "
                    f"its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            time.sleep(0.5)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the whole process group (CLI, uvicorn and its workers), SIGKILL what is left."""
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _group_alive(pgid):
            process.poll()  # reap the leader so the group can empty
            time.sleep(0.2)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
