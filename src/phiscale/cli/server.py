"""phiscale-server: start, stop and inspect a shared MLflow tracking server kept in one directory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from phiscale.errors import user_errors_as_one_line
from phiscale.server.stack import (
    BACKENDS,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_WORKERS,
    ServerStatus,
    TrackingServer,
)

EXIT_UNHEALTHY = 1
EXIT_STOPPED = 3  # as `pg_ctl status` and LSB init scripts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phiscale-server",
        description=(
            "A shared MLflow tracking server in one directory: a private PostgreSQL 15 cluster (or "
            "sqlite with --db sqlite) and `mlflow server` with proxied artifacts. `start` prints the "
            "export line for MLFLOW_TRACKING_URI on stdout; it is idempotent, and refuses (exit 2) a "
            "port held by another process or a directory that holds another server."
        ),
        epilog=(
            "examples:\n"
            '  eval "$(phiscale-server start --dir /srv/mlflow)"     # then phiscale-train tracking=server\n'
            "  phiscale-server start --dir /srv/mlflow --host 0.0.0.0 --allowed-hosts 'mlflow.example.org'\n"
            "  phiscale-server status --dir /srv/mlflow             # exit 0 healthy, 1 unhealthy, 3 stopped\n"
            "  phiscale-server stop --dir /srv/mlflow"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start the database and the server (what is not running)")
    stop = commands.add_parser("stop", help="stop the server, then the database")
    status = commands.add_parser("status", help="URI, pids, uptime, run counts and health of each part")
    for sub in (start, stop, status):
        sub.add_argument("--dir", required=True, help="the server's directory (database, artifacts, logs)")
    start.add_argument(
        "--db", choices=BACKENDS, default=None, help="the store (default: postgres; then what DIR holds)"
    )
    start.add_argument("--host", default=None, help=f"address to serve on (default: {DEFAULT_HOST})")
    start.add_argument("--port", type=int, default=None, help=f"HTTP port (default: {DEFAULT_PORT})")
    start.add_argument(
        "--pg-port",
        type=int,
        default=None,
        help="PostgreSQL's port on 127.0.0.1 (default: a free one, chosen once and kept in DIR)",
    )
    start.add_argument(
        "--workers", type=int, default=None, help=f"uvicorn worker processes (default: {DEFAULT_WORKERS})"
    )
    start.add_argument(
        "--allowed-hosts",
        default=None,
        help=(
            "more Host headers to accept, comma-separated, * wildcards (MLflow accepts localhost and "
            "private IPs; with --host 0.0.0.0 also this node's names)"
        ),
    )
    start.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STARTUP_TIMEOUT_S,
        help=f"seconds to wait for /health (default: {DEFAULT_STARTUP_TIMEOUT_S:.0f})",
    )
    return parser


def render_status(status: ServerStatus) -> list[str]:
    state = "running" if status.running else "stopped"
    if status.running and not status.healthy:
        state = "running, NOT healthy"
    lines = [f"{status.root}: {state} ({status.backend} backend)", f"  uri            {status.url}"]
    for part in status.parts:
        if part.running:
            up = f", up {_duration(part.uptime_s)}" if part.uptime_s is not None else ""
            health = "healthy" if part.healthy else "NOT healthy"
            lines.append(f"  {part.name:<14} pid {part.pid}{up}, {health}; {part.detail}".rstrip("; "))
        else:
            lines.append(f"  {part.name:<14} not running")
    if status.runs is not None:
        lines.append(f"  store          {status.experiments} experiments, {status.runs} runs")
    else:
        lines.append(f"  store          counts unavailable ({status.counts_error})")
    lines.append(f"  logs           {status.root / 'logs'}")
    return lines


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _say(message: str) -> None:
    print(f"phiscale-server: {message}", file=sys.stderr, flush=True)


@user_errors_as_one_line
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    server = TrackingServer(args.dir)
    if args.command == "start":
        result = server.start(
            backend=args.db,
            host=args.host,
            port=args.port,
            pg_port=args.pg_port,
            workers=args.workers,
            allowed_hosts=args.allowed_hosts,
            timeout_s=args.timeout,
        )
        if result.already_running:
            restarted = f"; restarted {' and '.join(result.started)}" if result.started else ""
            _say(f"{server.root} is already running at {result.url}{restarted}")
        else:
            _say(
                f"started {' and '.join(result.started)} in {result.startup_s:.0f} s; "
                f"logs in {server.log_dir}"
            )
        print(f"export MLFLOW_TRACKING_URI={result.url}", flush=True)
        return 0
    if args.command == "stop":
        stopped = server.stop()
        _say(
            f"stopped {' and '.join(stopped)}"
            if stopped
            else f"{server.root} is not running (nothing to stop)"
        )
        return 0
    status = server.status()
    print("\n".join(render_status(status)))
    if not status.running:
        return EXIT_STOPPED
    return 0 if status.healthy else EXIT_UNHEALTHY


if __name__ == "__main__":
    sys.exit(main())
