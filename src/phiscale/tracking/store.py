"""The MLflow store: URIs, the one client factory, the one reachability check, experiments, and
which failures are worth retrying."""

from __future__ import annotations

import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from phiscale.errors import PhiscaleError

DEFAULT_URI = "sqlite:///outputs/mlflow.db"
SQLITE = "sqlite:///"
# MLflow error codes that a retry cannot fix (the request itself is wrong, or its run is gone).
# Anything else (refused connections, timeouts, 5xx, "database is locked") is an outage: retry.
PERMANENT_ERROR_CODES = frozenset({
    "INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
    "INVALID_STATE", "MALFORMED_REQUEST", "ENDPOINT_NOT_FOUND",
})  # fmt: skip


def normalize_tracking_uri(uri: str) -> str:
    """Make a relative sqlite path absolute (DDP ranks and SLURM tasks may start elsewhere)."""
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        uri = SQLITE + str(Path(uri[len(SQLITE) :]).resolve())
    if uri.startswith(SQLITE):
        Path(uri[len(SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in uri and not uri.startswith("databricks"):
        raise PhiscaleError(
            f"tracking.uri={uri!r} is a bare path; MLflow 3 refuses file stores: "
            f"use tracking.uri=sqlite:///{Path(uri).resolve()}.db or an http:// server"
        )
    return uri


def resolve_uri(uri: str | None = None) -> str:
    """A command's --tracking-uri, else $MLFLOW_TRACKING_URI, else the project's local sqlite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


# Database URIs MLflow takes as tracking URIs (SQLAlchemy dialects, `+driver` allowed).
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
# What MLflow says when a server refuses the credentials (401) or the user's permission (403).
UNAUTHENTICATED = frozenset({"UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"})
PERMISSION_DENIED = "PERMISSION_DENIED"
CREDENTIALS_FIX = ("export MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or write ~/.mlflow/credentials) "
                   "for an account the server's admin made with `phiscale-server user add`")  # fmt: skip


def is_database(uri: str) -> bool:
    return uri.split("://", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES


def is_auth_error(error: BaseException) -> bool:
    """The server refused who we are (401) or what we may do (403): a retry soon cannot help,
    new credentials can (the journal keeps everything until then)."""
    return getattr(error, "error_code", None) in UNAUTHENTICATED | {PERMISSION_DENIED}


def signed_in_as() -> str:
    """Who MLflow's client signs in as (its environment variables, else ~/.mlflow/credentials)."""
    from mlflow.utils.credentials import read_mlflow_creds

    username = read_mlflow_creds().username
    return f"user {username!r}" if username else "anonymous access (no MLFLOW_TRACKING_USERNAME, no ~/.mlflow/credentials)"


def _tls_context() -> ssl.SSLContext | None:
    """urllib's TLS settings from MLflow's own: a server certificate to trust, or none checked."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()
    cafile = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    return ssl.create_default_context(cafile=cafile) if cafile else None


def short_http_timeouts(timeout_s: float = 10.0) -> None:
    """For a training process: MLflow's own HTTP client retries for minutes by default; phiscale
    retries itself (the sender), so each request fails within about `timeout_s` (a value the user
    exported wins). MLflow's "View run at" line repeats phiscale's own end line."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout_s))))
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def check_reachable(uri: str, timeout_s: float = 10.0, *, must_exist: bool = False) -> None:
    """Fail fast (within `timeout_s`) with the URI in the message; never fall back silently.

    A server must answer its health check; with `must_exist` (readers: eval, report) a sqlite
    store must already be there, so a wrong path is named rather than an empty store created.
    """
    # Readers keep a little of MLflow's own retrying; a training process set shorter ones first.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(timeout_s, 5) * 3)))
    if uri.startswith(SQLITE):
        path = uri[len(SQLITE) :]
        if must_exist and path != ":memory:" and not Path(path).exists():
            raise PhiscaleError(
                f"no MLflow database at {Path(path).resolve()} (tracking URI {uri}): train first, "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI to the store the runs are in"
            )
        return
    started = time.monotonic()
    if is_database(uri):
        _check_database(uri, timeout_s)
        return
    if not is_server(uri):
        return
    last_error = wait_until_reachable(uri, timeout_s)
    if last_error is None:
        check_credentials(uri, max(1.0, timeout_s - (time.monotonic() - started)))
        return
    if isinstance(getattr(last_error, "reason", None), ssl.SSLError):
        raise PhiscaleError(
            f"tracking server {uri} has a certificate this machine does not trust ({last_error.reason}); "
            "export MLFLOW_TRACKING_SERVER_CERT_PATH=<the server's DIR>/tls/cert.pem (phiscale-server start prints it)"
        )
    raise PhiscaleError(
        f"tracking server {uri} is unreachable after {timeout_s:.0f} s ({last_error}); start it "
        "(`phiscale-server start`), fix tracking.uri, or train anyway with tracking.mode=online_tolerant "
        "(or offline) and send the journal later with phiscale-sync"
    )


def wait_until_reachable(uri: str, timeout_s: float) -> Exception | None:
    """Poll `uri/health` until it answers or `timeout_s` passes; None when reachable, else the
    last error. Any HTTP answer counts (a proxy in front may not route /health)."""
    url = uri.rstrip("/") + "/health"
    deadline = time.monotonic() + timeout_s
    error: Exception | None = TimeoutError(f"no answer within {timeout_s:.0f} s")
    context = _tls_context() if url.startswith("https://") else None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=max(0.5, deadline - time.monotonic()), context=context):
                return None
        except urllib.error.HTTPError:
            return None
        except (urllib.error.URLError, OSError) as err:
            error = err
            if isinstance(getattr(err, "reason", None), ssl.SSLError):
                return err  # a certificate is not an outage: waiting cannot fix it
        time.sleep(0.5)
    return error


def check_credentials(uri: str, timeout_s: float) -> None:
    """One authenticated read, as MLflow's client would sign in: a locked server (phiscale-server's
    basic auth) that refuses the credentials is named at once, with the user and the fix."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search", "GET",
                                max_retries=0, timeout=timeout_s, params={"max_results": 1})  # fmt: skip
    except Exception:
        return  # not an answer about credentials: the client's own calls will tell
    if response.status_code == 401:
        raise PhiscaleError(f"tracking server {uri} refused {signed_in_as()} (401: wrong or missing password); "
                            + CREDENTIALS_FIX)  # fmt: skip


def _check_database(uri: str, timeout_s: float) -> None:
    """A database URI (MLflow's client then talks SQL itself): reachable and signed in within
    `timeout_s`, else one line, instead of MLflow's minutes of logged connection retries."""
    parts = urllib.parse.urlsplit(uri)
    shown = re.sub(r":[^:@/]*@", ":***@", uri) if parts.password else uri  # never print a password
    default_port = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}[parts.scheme.split("+")[0]]
    try:
        port = parts.port or default_port
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s):
            pass
    except (OSError, ValueError) as err:
        raise PhiscaleError(
            f"tracking database {shown} is unreachable ({describe_error(err)}); start it or fix tracking.uri "
            "(a shared server is usually an http:// URI: `phiscale-server start` prints it)"
        ) from None
    if not parts.scheme.startswith(("postgresql", "mysql")):
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": max(1, int(timeout_s))}, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except Exception as err:
        cause = str(getattr(err, "orig", err)).strip().splitlines()[0][:200]
        raise PhiscaleError(f"tracking database {shown} refused the connection ({cause}); fix tracking.uri "
                            "(user, password, database name)") from None  # fmt: skip
    finally:
        engine.dispose()


def client(uri: str):
    """The one MLflow client factory: every phiscale command talks to MLflow through a client from here."""
    from mlflow.tracking import MlflowClient

    if not uri.startswith(SQLITE):
        return MlflowClient(tracking_uri=uri)
    # The first client of a new sqlite store creates its tables (alembic migrations); processes
    # that start together (SLURM array tasks, Hydra multirun jobs) would race on it and fail with
    # "Online migration expected to match one row". One lock file beside the database serialises it.
    import fcntl

    path = uri[len(SQLITE) :]
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path != ":memory:" and not os.path.exists(path):
            copy_empty_store(path)
        return MlflowClient(tracking_uri=uri)


def copy_empty_store(path: str) -> None:
    """A new sqlite store as a copy of an empty one migrated once per MLflow version (in
    `$PHISCALE_CACHE/mlflow/`): MLflow would run its 68 schema migrations (3.17) in every new store, a
    second of CPU and as many fsyncs (7 s on a busy disk) in each test, sweep and first run (issue
    31). The copy holds the tables and their alembic revision only: MLflow adds its Default
    experiment on first open, as in a store it made itself. When the cache cannot be written,
    MLflow makes the store as it would."""
    import shutil

    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        shutil.copyfile(empty_store_template(), tmp)
        os.replace(tmp, path)
    except Exception:  # noqa: BLE001 (a cache is only ever a shortcut)
        Path(tmp).unlink(missing_ok=True)


def empty_store_template() -> Path:
    """The migrated empty store of this MLflow version, made on first use (concurrent makers each
    rename a complete file into place)."""
    import mlflow.version
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables  # what MLflow runs on a store with no tables

    from phiscale.paths import cache_dir

    template = cache_dir("mlflow") / f"empty-store-{mlflow.version.VERSION}.db"
    if template.exists():
        return template
    tmp = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"{SQLITE}{tmp}")
    try:
        _initialize_tables(engine)
        engine.dispose()
        os.replace(tmp, template)
    finally:
        engine.dispose()
        tmp.unlink(missing_ok=True)
    return template


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Beside a sqlite store: `<db dir>/mlartifacts/<experiment>` (MLflow's default would be
    ./mlruns of whatever directory a job happens to start in). Servers choose their own."""
    if not tracking_uri.startswith(SQLITE):
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (Path(tracking_uri[len(SQLITE) :]).parent / "mlartifacts" / safe).as_uri()


# MLflow 3's UI opens an experiment in its GenAI view (traces) unless this tag says it is model
# training; the value is the UI's own name for that kind (mlflow/server/js: CUSTOM_MODEL_DEVELOPMENT).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def get_or_create_experiment(mlflow, name: str) -> str:
    """The id of experiment `name`, created (once, whoever races) if missing, marked as model training."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow.create_experiment(name, artifact_location=artifact_location(mlflow.tracking_uri, name),
                                            tags=EXPERIMENT_KIND)
        except Exception:  # another rank or array task created it first
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise PhiscaleError(
            f"MLflow experiment {name!r} is deleted; restore it in the UI or use tracking.experiment=<new name>"
        )
    for key, value in EXPERIMENT_KIND.items():
        if key not in experiment.tags:  # an experiment made elsewhere: phiscale's runs are model training
            mlflow.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


GRANT_RACE_S = 10.0


def create_run(mlflow, experiment_id: str, **kwargs):
    """`mlflow.create_run`, riding out the grant race of a locked server: MLflow's basic-auth app
    gives an experiment's creator MANAGE only after it answered the create (an after-request
    hook, mlflow/server/auth `set_can_manage_experiment_permission`), so a sweep's other jobs of
    the same user that found the new experiment meanwhile get 403 for a moment (5 of 64 writers in
    benchmarks/tracking_load.py). A 403 is retried for GRANT_RACE_S; a real one then stands."""
    deadline = time.monotonic() + GRANT_RACE_S
    while True:
        try:
            return mlflow.create_run(experiment_id, **kwargs)
        except Exception as err:
            if getattr(err, "error_code", None) != PERMISSION_DENIED or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def is_permanent(error: BaseException) -> bool:
    """True when retrying `error` cannot help (MLflow refused the request itself)."""
    return getattr(error, "error_code", None) in PERMANENT_ERROR_CODES


# MLflow's client wraps a failed HTTP call as "API request to <url> failed with exception <urllib3's
# repr>"; what a user needs is the cause at its end ("[Errno 111] Connection refused", "Read timed out").
_API_NOISE = re.compile(r"API request to \S+ failed with exception ")
_CAUSE = re.compile(r"\(Caused by (\w+)\(['\"]?(?:[^'\"]*?: )?(.*?)['\"]?\)\)$")


def describe_error(error: BaseException) -> str:
    """One short line for a log: the error's type and the cause, without MLflow's URL noise."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if _API_NOISE.search(text):
        cause = _CAUSE.search(text)
        text = f"{cause.group(1)}: {cause.group(2)}" if cause else _API_NOISE.sub("", text)
    return f"{type(error).__name__}: {text[:200]}"


# MLflow 3.17's UI opens an experiment in its GenAI view unless the link (or the browser's memory of
# the GenAI / Model training switch) says `workflowType=machine_learning`; the experiment's
# `mlflow.experimentKind` tag is read only behind a feature flag (tests/browser/test_mlflow_ui.py).
TRAINING_VIEW = "?workflowType=machine_learning"


def _ui_base(tracking_uri: str) -> str:
    return tracking_uri.rstrip("/") if is_server(tracking_uri) else "http://127.0.0.1:5000"


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs table (the Model training view): the server's, or the local `mlflow ui`'s."""
    return f"{_ui_base(tracking_uri)}/#/experiments/{experiment_id}{TRAINING_VIEW}"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where a user browses one run (its way back to the experiment stays in the training view)."""
    return f"{_ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}{TRAINING_VIEW}"


def ui_command(tracking_uri: str) -> str:
    """What a user runs to browse the runs."""
    if is_server(tracking_uri):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"
