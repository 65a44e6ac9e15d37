"""Who may change what on the shared server: MLflow's `basic-auth` app, its users and grants.

MLflow 3.17.2 (mlflow/server/auth/, read there): `mlflow server --app-name basic-auth` refuses to
start without MLFLOW_FLASK_SERVER_SECRET_KEY (CSRF on its signup form) and, on an empty user
store, without an admin password of at least 12 characters (the old default `password1234` is
refused); it reads its settings from the ini file named by MLFLOW_AUTH_CONFIG_PATH. The users
and grants live in a SQLAlchemy database of their own: here `mlflow_auth` in the server's
PostgreSQL cluster, or DIR/basic_auth.db beside a sqlite store. `default_permission` is a floor
under every grant (READ: everyone signed in reads everything; NO_PERMISSIONS: only what is
granted); whoever creates an experiment gets MANAGE on it. `/health` stays open (our probes).
MLflow's `auth_cache_ttl_seconds` is 0 by default: every request then checks the password's
scrypt hash (werkzeug's default, measured 180 ms of CPU here), and 64 writers on 2 cores time out
(benchmarks/tracking_load.py, README). We cache a successful check for AUTH_CACHE_TTL_S in each
worker: a changed password or a removed user is refused at once by the worker that made the
change and by every worker within AUTH_CACHE_TTL_S.

Clients sign in with MLflow's own mechanisms: MLFLOW_TRACKING_USERNAME / _PASSWORD, or
~/.mlflow/credentials (`write_credentials`). The admin's password and the secret key are made once
and kept in DIR/phiscale-server.json (mode 0600); `AuthAdmin` is the admin's REST client that the
`phiscale-server user` and `grant` commands use.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from phiscale.errors import PhiscaleError
from phiscale.paths import write_atomically
from phiscale.server.process import ALL_INTERFACES

APP_NAME = "basic-auth"
ADMIN = "admin"
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE")
DEFAULT_PERMISSIONS = ("READ", "NO_PERMISSIONS")
AUTH_INI = "basic_auth.ini"
AUTH_SQLITE = "basic_auth.db"
TLS_DIR = "tls"
MIN_PASSWORD = 12  # mlflow.utils.validation._validate_password
AUTH_CACHE_TTL_S = 30  # see the module docstring
REQUEST_TIMEOUT_S = 30
# The app's REST routes (mlflow/server/auth/routes.py; importing it would import mlflow.server).
CREATE_USER = "/api/2.0/mlflow/users/create"
LIST_USERS = "/api/2.0/mlflow/users/list"
UPDATE_USER_PASSWORD = "/api/2.0/mlflow/users/update-password"
DELETE_USER = "/api/2.0/mlflow/users/delete"
GRANT_USER_PERMISSION = "/api/3.0/mlflow/users/permissions/grant"
REVOKE_USER_PERMISSION = "/api/3.0/mlflow/users/permissions/revoke"


def new_password() -> str:
    return secrets.token_urlsafe(18)  # 24 characters, url- and ini-safe


def new_secret_key() -> str:
    return secrets.token_hex(32)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: only this node can reach a server bound there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_password(password: str, who: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise PhiscaleError(
            f"the password for {who} has {len(password)} characters; MLflow wants at least {MIN_PASSWORD}"
        )


# ---------------------------------------------------------------- the server's side -----
def server_env(root: Path, database_uri: str, default_permission: str, secret_key: str, admin_password: str) -> dict:
    """Write DIR/basic_auth.ini (mode 0600: it holds the database password) and return the
    environment `mlflow server --app-name basic-auth` needs."""
    if default_permission not in DEFAULT_PERMISSIONS:
        raise PhiscaleError(
            f"--default-permission {default_permission} is not one of {', '.join(DEFAULT_PERMISSIONS)}"
        )
    ini = root / AUTH_INI
    write_atomically(
        ini,
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = {database_uri.replace('%', '%%')}\n"
        f"admin_username = {ADMIN}\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
        mode=0o600,
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key,
        # Read only while the admin does not exist yet (the first start); later ones keep its password.
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
    }


def self_signed_certificate(root: Path, names: list[str], days: int = 3650) -> tuple[Path, Path]:
    """DIR/tls/cert.pem and key.pem, made once (kept across restarts: clients keep trusting it);
    the names clients dial (this node's names, localhost, 127.0.0.1) are its subject alt names."""
    folder = root / TLS_DIR
    cert, key = folder / "cert.pem", folder / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(mode=0o700, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    alt = []
    for name in dict.fromkeys([*names, "localhost", "127.0.0.1", "::1"]):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(private.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )  # fmt: skip
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_atomically(key, key_pem.decode(), mode=0o600)
    write_atomically(cert, certificate.public_bytes(serialization.Encoding.PEM).decode(), mode=0o644)
    return cert, key


def node_names(host: str) -> list[str]:
    """The names a client may dial for a server bound to `host`."""
    if host in ALL_INTERFACES:
        return list(dict.fromkeys([socket.gethostname(), socket.getfqdn()]))
    return [host]


def write_credentials(path: str | Path, username: str, password: str) -> Path:
    """MLflow's credentials file (mlflow/utils/credentials.py reads ~/.mlflow/credentials), mode 0600."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(
            path,
            "[mlflow]\n"
            f"mlflow_tracking_username = {username}\n"
            f"mlflow_tracking_password = {password.replace('%', '%%')}\n",
            mode=0o600,
        )
    except OSError as err:
        raise PhiscaleError(f"cannot write --write-credentials {path}: {err.strerror}; pick a path you can write") from None
    return path


# ---------------------------------------------------------------- the admin's client -----
@dataclass
class User:
    name: str
    is_admin: bool


class AuthAdmin:
    """The admin's REST client for users and grants (MLflow's AuthServiceClient reads its
    credentials from the environment; this one is handed them)."""

    def __init__(self, url: str, password: str, cert_path: str | None = None) -> None:
        self.url = url
        self.password = password
        self.cert_path = cert_path

    def _call(self, endpoint: str, method: str, what: str, **kwargs) -> dict:
        from mlflow.utils.rest_utils import MlflowHostCreds, http_request

        creds = MlflowHostCreds(self.url, username=ADMIN, password=self.password, server_cert_path=self.cert_path)
        try:
            response = http_request(creds, endpoint, method, max_retries=0, timeout=REQUEST_TIMEOUT_S, **kwargs)
        except Exception as err:
            from phiscale.tracking.store import describe_error

            raise PhiscaleError(f"cannot {what}: the server at {self.url} does not answer ({describe_error(err)}); "
                                "is it running (phiscale-server status)?") from None  # fmt: skip
        if response.status_code == 401:
            raise PhiscaleError(
                f"cannot {what}: {self.url} refused the admin password kept in phiscale-server.json "
                "(was it changed by hand?); set it back with the server's MLFLOW_AUTH_ADMIN_PASSWORD"
            )
        if response.status_code != 200:
            try:
                message = json.loads(response.text).get("message", response.text)
            except ValueError:
                message = response.text
            raise PhiscaleError(f"cannot {what}: {self.url} answered {response.status_code}: {message.strip()[:200]}")
        return response.json() if response.text.strip() else {}

    # -- users --------------------------------------------------------------------------
    def users(self) -> list[User]:

        found = self._call(LIST_USERS, "GET", "list the users").get("users", [])
        return [User(u["username"], bool(u.get("is_admin"))) for u in found]

    def add_user(self, name: str, password: str) -> None:

        check_password(password, f"user {name!r}")
        if any(user.name == name for user in self.users()):
            raise PhiscaleError(f"user {name!r} exists already; change its password with `phiscale-server user passwd`")
        self._call(CREATE_USER, "POST", f"add user {name!r}", json={"username": name, "password": password})

    def set_password(self, name: str, password: str) -> None:

        check_password(password, f"user {name!r}")
        if name == ADMIN:
            raise PhiscaleError(f"the {ADMIN!r} password is phiscale-server's own (kept in phiscale-server.json)")
        self._require(name)
        self._call(UPDATE_USER_PASSWORD, "PATCH", f"change the password of {name!r}",
                   json={"username": name, "password": password})  # fmt: skip

    def remove_user(self, name: str) -> None:

        if name == ADMIN:
            raise PhiscaleError(f"the {ADMIN!r} user is how phiscale-server manages users; it stays")
        self._require(name)
        self._call(DELETE_USER, "DELETE", f"remove user {name!r}", json={"username": name})

    def _require(self, name: str) -> None:
        if not any(user.name == name for user in self.users()):
            raise PhiscaleError(f"there is no user {name!r} (phiscale-server user list shows who there is)")

    # -- grants -------------------------------------------------------------------------
    def experiment_id(self, experiment: str) -> str:
        """The id of experiment `experiment` (a name, or an id)."""
        found = self._call("/api/2.0/mlflow/experiments/search", "POST", f"find experiment {experiment!r}",
                           json={"max_results": 1000}).get("experiments", [])  # fmt: skip
        for item in found:
            if experiment in (item["name"], item["experiment_id"]):
                return item["experiment_id"]
        raise PhiscaleError(f"there is no experiment {experiment!r} on {self.url}; name an existing one (or its id)")

    def grant(self, name: str, experiment: str, permission: str) -> str:
        """`permission` for user `name` on `experiment` (replacing an earlier grant); its id."""

        if permission not in PERMISSIONS:
            raise PhiscaleError(f"permission {permission!r} is not one of {', '.join(PERMISSIONS)}")
        self._require(name)
        experiment_id = self.experiment_id(experiment)
        self._revoke(name, experiment_id)
        self._call(GRANT_USER_PERMISSION, "POST", f"grant {permission} on {experiment!r} to {name!r}",
                   json={"username": name, "resource_type": "experiment", "resource_id": experiment_id,
                         "permission": permission})  # fmt: skip
        return experiment_id

    def revoke(self, name: str, experiment: str) -> str:
        self._require(name)
        experiment_id = self.experiment_id(experiment)
        if not self._revoke(name, experiment_id):
            raise PhiscaleError(f"user {name!r} has no grant on experiment {experiment!r}; nothing to revoke")
        return experiment_id

    def _revoke(self, name: str, experiment_id: str) -> bool:
        """Drop `name`'s grant on the experiment; False when it had none."""
        try:
            self._call(REVOKE_USER_PERMISSION, "POST", f"revoke the grant of {name!r} on experiment {experiment_id}",
                       json={"username": name, "resource_type": "experiment", "resource_id": experiment_id})  # fmt: skip
        except PhiscaleError as err:
            if " answered 404:" in str(err):
                return False
            raise
        return True


# ---------------------------------------------------------------- start's options -----
def settle_options(state, recorded, *, auth: bool | None = None, default_permission: str | None = None,
                   tls: bool | None = None, tls_cert: str | None = None, tls_key: str | None = None) -> list[str]:
    """Fill `state`'s auth and TLS fields from the options, else what DIR recorded, else the
    defaults (auth on, READ, no TLS); refuse `--no-auth` off loopback. Warnings to print."""
    def pick(given, name: str, default):
        return given if given is not None else getattr(recorded, name) if recorded is not None else default

    state.auth = pick(auth, "auth", True)
    if not state.auth and not is_loopback(state.host):
        raise PhiscaleError(
            f"--no-auth with --host {state.host} would let anyone on the network change or delete every run; "
            "drop --no-auth (users: phiscale-server user add) or serve on 127.0.0.1"
        )
    state.default_permission = pick(default_permission, "default_permission", "READ")
    if state.default_permission not in DEFAULT_PERMISSIONS:
        raise PhiscaleError(f"--default-permission {state.default_permission} is not one of {', '.join(DEFAULT_PERMISSIONS)}")
    state.secret_key = getattr(recorded, "secret_key", None) or new_secret_key()
    state.admin_password = getattr(recorded, "admin_password", None) or new_password()
    if (tls_cert is None) != (tls_key is None):
        raise PhiscaleError("--tls-cert and --tls-key go together: pass both (or --tls for a self-signed pair)")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path is not None and not Path(path).is_file():
            raise PhiscaleError(f"{flag} {path} is not a file; pass the PEM file uvicorn should serve")
    state.tls = pick(True if tls_cert else tls, "tls", False)
    state.tls_cert = str(Path(tls_cert).resolve()) if tls_cert else (getattr(recorded, "tls_cert", None) if state.tls else None)
    state.tls_key = str(Path(tls_key).resolve()) if tls_key else (getattr(recorded, "tls_key", None) if state.tls else None)
    if state.auth and not state.tls and not is_loopback(state.host):
        return [f"--host {state.host} without --tls: passwords cross the network in clear (basic auth); add --tls"]
    return []


def server_options(root: Path, state, database_uri: str) -> dict:
    """MlflowServer's keyword arguments for the auth app and TLS (none when both are off)."""
    options: dict = {}
    if state.tls:
        if not state.tls_cert:
            state.tls_cert, state.tls_key = (str(p) for p in self_signed_certificate(root, node_names(state.host)))
        options["tls"] = (state.tls_cert, state.tls_key)
    if state.auth:
        options["app_name"] = APP_NAME
        options["env"] = server_env(root, database_uri, state.default_permission, state.secret_key,
                                    state.admin_password)  # fmt: skip
    return options
