"""Start and stop a real `mlflow server` (proxied artifacts) as one process group, and the small
probes the server code shares: free ports, who holds a port, /health, process groups (the clients'
reachability check is phiscale.tracking.store.wait_until_reachable).

Shared tracking store for a cluster
-----------------------------------
Run one MLflow tracking server on a node every job can reach (the login node or a small
service node); jobs log over HTTP and need no access to the database or the artifact files.
`phiscale-server start --dir DIR` (phiscale.server.stack) does it with PostgreSQL, the pool
and timeout settings measured by benchmarks/tracking_load.py, and start/stop/status; by hand,
the same server on sqlite is:

    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server \\
        --backend-store-uri sqlite:////srv/mlflow/mlflow.db \\
        --artifacts-destination /srv/mlflow/artifacts --serve-artifacts \\
        --host 0.0.0.0 --port 5000 --workers 2 \\
        --allowed-hosts 'login01,login01:5000,10.*'

    export MLFLOW_TRACKING_URI=http://login01:5000          # in ~/.bashrc or the sbatch script
    phiscale-train tracking=server ...                        # or the SLURM array of a sweep
    phiscale-report --experiment phiscale                     # reads the same URI

sqlite serialises all writers on one file lock: fine for one user and small sweeps (see the
README's table for where it stops coping). `--serve-artifacts` makes the server proxy every
artifact upload and download (`mlflow-artifacts:/` URIs), so compute nodes never write to the
artifact store directly; the destination can also be `s3://bucket/prefix`.
`MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` skips the server's GenAI job runner, which tracking
does not use. Startup takes 15-50 s on a busy 2-core node (measured: about 16 s idle here);
wait for `curl http://login01:5000/health` to say OK before submitting. `--host 0.0.0.0`
exposes this plain server to the whole network without authentication: `phiscale-server` adds
MLflow's basic-auth app (phiscale.server.auth); list the names clients use in `--allowed-hosts`.

In Python (tests, one-node experiments) use `MlflowServer`, which binds 127.0.0.1 on a free
port, runs the server in its own process group and stops the whole group:

    with MlflowServer(tmp_path) as server:
        client = mlflow.MlflowClient(server.url)
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from phiscale.errors import PhiscaleError

DEFAULT_STARTUP_TIMEOUT_S = 120.0
# uvicorn (MLflow 3's default server) has no per-request timeout, so a long checkpoint upload is
# never cut off server-side; its supervisor kills a worker that misses a 5 s health ping
# (uvicorn --timeout-worker-healthcheck), which a loaded 2-core node can miss: allow a minute.
UVICORN_OPTS = "--timeout-worker-healthcheck 60 --timeout-graceful-shutdown 20"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when `host:port` can be bound now (nothing listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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


def probe_host(host: str) -> str:
    """Where this node reaches a server bound to `host`."""
    return "::1" if host == "::" else "127.0.0.1" if host in ALL_INTERFACES else host


def port_holder(port: int) -> str | None:
    """`pid N (command line)` of the process listening on TCP `port`, when /proc says (Linux)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{inode}]")
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return f"pid {pid} ({command_line(pid)})"
            except OSError:
                continue
    return None


def command_line(pid: int, limit: int = 80) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_healthy(url: str, timeout: float = 2.0, cafile: str | Path | None = None) -> bool:
    """True when `url/health` answers 200 (the tracking server's readiness endpoint; basic auth
    leaves it open). `cafile`: the server's own certificate, for an https:// probe of it."""
    context = None
    if cafile is not None:  # our own self-signed certificate: the chain is checked, the name the
        context = ssl.create_default_context(cafile=str(cafile))  # probe dials (0.0.0.0) is not
        context.check_hostname = False
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class MlflowServer:
    """One `mlflow server` process group on `host:port`, data under `root` (db + artifacts + log).

    `env` adds environment variables for the server (pool sizes, ...); the backend store URI
    travels in the environment too, so a database password never shows in `ps`. `app_name`
    (`basic-auth`) wraps the server in an MLflow app; `tls` = (certificate, key) serves HTTPS.
    """

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
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        allowed_hosts: str | None = None,
        app_name: str | None = None,
        tls: tuple[str | Path, str | Path] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.host = host
        self.port = port
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        self.artifacts_destination = str(artifacts_destination or self.root / "artifacts")
        self.workers = workers
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else self.root / "server.log"
        self.env = dict(env or {})
        self.allowed_hosts = allowed_hosts
        self.app_name = app_name
        self.tls = (Path(tls[0]), Path(tls[1])) if tls else None
        self.startup_s: float | None = None  # how long the last start took
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("MlflowServer has no port until start() is called")
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The CLI's pid, which is also the process group id of the server."""
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        mlflow_script = Path(sys.executable).with_name("mlflow")
        prog = [str(mlflow_script)] if mlflow_script.exists() else [sys.executable, "-m", "mlflow"]
        allowed = ["--allowed-hosts", self.allowed_hosts] if self.allowed_hosts else []
        app = ["--app-name", self.app_name] if self.app_name else []
        uvicorn_opts = UVICORN_OPTS
        if self.tls:  # `mlflow server` hands --uvicorn-opts to uvicorn as they are
            uvicorn_opts += f" --ssl-certfile {shlex.quote(str(self.tls[0]))} --ssl-keyfile {shlex.quote(str(self.tls[1]))}"
        return [
            *prog,
            "server",
            "--artifacts-destination",
            self.artifacts_destination,
            "--serve-artifacts",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--uvicorn-opts",
            uvicorn_opts,
            *allowed,
            *app,
        ]

    def start(self) -> MlflowServer:
        """Launch the server in a new session (its own process group) and wait for /health."""
        if self._process is not None:
            raise RuntimeError(f"MlflowServer at {self.url} is already started")
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        if not port_is_free(self.port, self.host) or self.healthy(timeout=1.0):
            holder = port_holder(self.port) or "another process"
            raise PhiscaleError(
                f"something already answers at {self.url} ({holder}); pick another port or stop it"
            )
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            **self.env,
            "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,
        }
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
                raise PhiscaleError(
                    f"mlflow server exited with code {self._process.returncode} before it was ready; "
                    f"see {self.log_path}, which ends: {self.log_tail(5, sep=' | ')}"
                )
            if self.healthy(timeout=2.0):
                return
            if time.monotonic() - started > self.startup_timeout_s:
                raise PhiscaleError(
                    f"mlflow server at {self.url} was not healthy after {self.startup_timeout_s:.0f} s; "
                    f"see {self.log_path}, which ends: {self.log_tail(5, sep=' | ')}"
                )
            time.sleep(0.5)

    def healthy(self, timeout: float = 2.0) -> bool:
        return is_healthy(self.url, timeout, cafile=self.tls[0] if self.tls else None)

    def detach(self) -> int:
        """Leave the started server running after this object is gone; its process group id."""
        if self._process is None:
            raise RuntimeError("MlflowServer.detach() before start()")
        pid, self._process = self._process.pid, None
        return pid

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the whole process group (CLI, uvicorn and its workers), SIGKILL what is left."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process_group(process.pid, timeout_s, reap=process.poll)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20, sep: str = "\n") -> str:
        try:
            return sep.join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process_group(pgid: int, timeout_s: float = 30.0, reap=None) -> bool:
    """SIGTERM process group `pgid`, wait until no live member is left, SIGKILL after
    `timeout_s`; True when it had to kill. `reap` is called while waiting (a parent's poll)."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        if reap is not None:
            reap()  # reap the leader so the group can empty
        time.sleep(0.2)
    if not group_members(pgid):
        return False
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        if reap is not None:
            reap()
        time.sleep(0.1)
    return True


def group_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes in process group `pgid`, from /proc."""
    members = []
    for pid in _pids():
        stat = process_stat(pid)
        if stat is not None and int(stat[2]) == pgid and stat[0] != "Z":
            members.append(pid)
    return members


def process_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: state, ppid, pgrp, ... (field 3 onwards); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot): with the pid, it names one process for good."""
    stat = process_stat(pid)
    return int(stat[19]) if stat is not None and stat[0] != "Z" else None


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
