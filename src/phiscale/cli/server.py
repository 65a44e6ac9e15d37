"""phiscale-server: start, stop and inspect a shared MLflow tracking server kept in one directory."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from phiscale.errors import PhiscaleError, user_errors_as_one_line
from phiscale.server.auth import DEFAULT_PERMISSIONS, PERMISSIONS, new_password, write_credentials
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
            "sqlite with --db sqlite) and `mlflow server` with proxied artifacts, behind MLflow's "
            "basic-auth app (users, per-experiment permissions). `start` prints the export lines "
            "clients need on stdout; it is idempotent, and refuses (exit 2) a port held by another "
            "process or a directory that holds another server."
        ),
        epilog=(
            "examples:\n"
            '  eval "$(phiscale-server start --dir /srv/mlflow)"     # then phiscale-train tracking=server\n'
            "  phiscale-server start --dir /srv/mlflow --host 0.0.0.0 --allowed-hosts 'mlflow.example.org'\n"
            "  phiscale-server user add --dir /srv/mlflow alice --write-credentials ~alice/.mlflow/credentials\n"
            "  phiscale-server grant --dir /srv/mlflow alice imagenet-sweep EDIT\n"
            "  phiscale-server status --dir /srv/mlflow             # exit 0 healthy, 1 unhealthy, 3 stopped\n"
            "  phiscale-server stop --dir /srv/mlflow"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="start the database and the server (what is not running)")
    stop = commands.add_parser("stop", help="stop the server, then the database")
    status = commands.add_parser("status", help="URI, pids, uptime, run counts and health of each part")
    user = commands.add_parser("user", help="add, list, re-password or remove the server's users")
    users = user.add_subparsers(dest="user_command", required=True)
    user_add = users.add_parser("add", help="a new user (its password generated and printed once, or from stdin)")
    user_list = users.add_parser("list", help="the users, one a line")
    user_passwd = users.add_parser("passwd", help="a new password for a user (generated, or from stdin)")
    user_remove = users.add_parser("remove", help="remove a user and its grants")
    grant = commands.add_parser("grant", help="give a user a permission on one experiment")
    revoke = commands.add_parser("revoke", help="take a user's grant on one experiment back")
    for sub in (start, stop, status, user_add, user_list, user_passwd, user_remove, grant, revoke):
        sub.add_argument("--dir", required=True, help="the server's directory (database, artifacts, logs)")
    for sub in (user_add, user_passwd, user_remove, grant, revoke):
        sub.add_argument("name", help="the user's name")
    for sub in (user_add, user_passwd):
        sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin (12+ characters)")
        sub.add_argument("--write-credentials", metavar="PATH", default=None,
                         help="also write MLflow's credentials file there (mode 0600), e.g. ~/.mlflow/credentials")
    for sub in (grant, revoke):
        sub.add_argument("experiment", help="the experiment's name (or id)")
    grant.add_argument("permission", choices=PERMISSIONS, help="READ < USE < EDIT (write runs) < MANAGE (delete, grant)")
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
        "--auth", action=argparse.BooleanOptionalAction, default=None,
        help="MLflow's basic-auth app (default: on; --no-auth only with a loopback --host)",
    )  # fmt: skip
    start.add_argument(
        "--default-permission", choices=DEFAULT_PERMISSIONS, default=None,
        help="what every signed-in user may do on experiments not granted (default: READ)",
    )  # fmt: skip
    start.add_argument(
        "--tls", action=argparse.BooleanOptionalAction, default=None,
        help="serve HTTPS with a self-signed certificate made once in DIR/tls (or --tls-cert/--tls-key)",
    )  # fmt: skip
    start.add_argument("--tls-cert", default=None, help="a PEM certificate to serve (with --tls-key)")
    start.add_argument("--tls-key", default=None, help="its PEM private key")
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
    if status.auth:
        users = f"{status.users} users" if status.users is not None else "users unavailable (the server does not answer)"
        lines.append(f"  auth           on (basic-auth), {users}")
    else:
        lines.append("  auth           off (--no-auth: anyone who reaches the port may change any run)")
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
            auth=args.auth,
            default_permission=args.default_permission,
            tls=args.tls,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
        for warning in result.warnings:
            _say(f"warning: {warning}")
        if result.already_running:
            restarted = f"; restarted {' and '.join(result.started)}" if result.started else ""
            _say(f"{server.root} is already running at {result.url}{restarted}")
        else:
            _say(
                f"started {' and '.join(result.started)} in {result.startup_s:.0f} s; "
                f"logs in {server.log_dir}"
            )
        print(f"export MLFLOW_TRACKING_URI={result.url}", flush=True)
        if result.cert_path:
            print(f"export MLFLOW_TRACKING_SERVER_CERT_PATH={result.cert_path}", flush=True)
        return 0
    if args.command in ("user", "grant", "revoke"):
        return _manage(server, args)
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


def _manage(server: TrackingServer, args: argparse.Namespace) -> int:
    """The user and grant commands, as the admin whose password DIR keeps."""
    admin = server.admin()
    command = args.command if args.command != "user" else args.user_command
    if command == "list":
        for user in admin.users():
            print(f"{user.name}{'  (admin)' if user.is_admin else ''}")
        return 0
    if command == "grant":
        admin.grant(args.name, args.experiment, args.permission)
        _say(f"{args.name} has {args.permission} on experiment {args.experiment!r}")
        return 0
    if command == "revoke":
        admin.revoke(args.name, args.experiment)
        _say(f"revoked {args.name}'s grant on experiment {args.experiment!r} (the default permission still applies)")
        return 0
    if command == "remove":
        admin.remove_user(args.name)
        _say(f"removed user {args.name}")
        return 0
    password = _read_password() if args.password_stdin else new_password()
    (admin.add_user if command == "add" else admin.set_password)(args.name, password)
    _say(f"{'added user' if command == 'add' else 'new password for'} {args.name}")
    if not args.password_stdin:  # shown once: the server keeps only a hash
        print(f"password for {args.name}: {password}", flush=True)
    if args.write_credentials:
        path = write_credentials(args.write_credentials, args.name, password)
        _say(f"wrote MLflow's credentials for {args.name} to {path} (mode 0600)")
    return 0


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise PhiscaleError("--password-stdin read an empty line; pipe the password in (echo ... | phiscale-server ...)")
    return password


if __name__ == "__main__":
    sys.exit(main())
