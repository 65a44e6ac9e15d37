"""MLflow run lifecycle: create or resume a run, log once from rank 0, never log a step twice.

This is the only module that writes to MLflow. A run's identity lives in
`<output_dir>/checkpoints/mlflow_run.json`, beside `last.ckpt`: starting again with the same
output dir reopens the same run (no second run, params not re-logged, metrics continue at the
checkpoint's step and skip every step the run already holds).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from phiscale.errors import PhiscaleError

RUN_RECORD = "mlflow_run.json"
PARAM_VALUE_LIMIT = 6000  # MLflow 3 rejects longer param values (docs: "Logging params")
STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "finished": "FINISHED"}


# ---------------------------------------------------------------- tracking URI -----
def normalize_tracking_uri(uri: str) -> str:
    """Make a relative sqlite path absolute (DDP ranks and SLURM tasks may start elsewhere)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path = Path(uri[len(prefix) :]).resolve()
        uri = prefix + str(path)
    if uri.startswith(prefix):
        Path(uri[len(prefix) :]).parent.mkdir(parents=True, exist_ok=True)
    if "://" not in uri and not uri.startswith("databricks"):
        raise PhiscaleError(
            f"tracking.uri={uri!r} is a bare path; MLflow 3 refuses file stores: "
            f"use tracking.uri=sqlite:///{Path(uri).resolve()}.db or an http:// server"
        )
    return uri


DEFAULT_URI = "sqlite:///outputs/mlflow.db"


def resolve_uri(uri: str | None = None) -> str:
    """A command's --tracking-uri, else $MLFLOW_TRACKING_URI, else the project's local sqlite store."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def check_reachable(uri: str, timeout_s: float = 10.0, *, must_exist: bool = False) -> None:
    """Fail fast (within `timeout_s`) with the URI in the message; never fall back silently.

    A server must answer its health check; with `must_exist` (readers: eval, report) a sqlite
    store must already be there, so a wrong path is named rather than an empty store created.
    """
    # Keep MLflow's own HTTP retries short too, so a server that dies mid-run fails in seconds.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(timeout_s, 5) * 3)))
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = uri[len(prefix) :]
        if must_exist and path != ":memory:" and not Path(path).exists():
            raise PhiscaleError(
                f"no MLflow database at {Path(path).resolve()} (tracking URI {uri}): train first, "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI to the store the runs are in"
            )
        return
    if not uri.startswith(("http://", "https://")):
        return
    from phiscale.mlflow_server import wait_until_reachable

    last_error = wait_until_reachable(uri, timeout_s)
    if last_error is None:
        return
    raise PhiscaleError(
        f"tracking server {uri} is unreachable after {timeout_s:.0f} s ({last_error}); "
        "start it (`phiscale-server start`, see README: shared tracking server) or use tracking=local"
    )


# ---------------------------------------------------------------- params and tags -----
def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """`{"model": {"phi": 1}}` -> `{"model.phi": "1"}`; values cut to MLflow's length limit."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = str(value)[:PARAM_VALUE_LIMIT]
    return flat


def git_commit(repo: Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_tags(world_size: int) -> dict[str, str]:
    """Where and how the run ran: commit, host, world size, and the SLURM job (`phiscale.slurm`)."""
    from phiscale.slurm import slurm_env

    tags = {"git_commit": git_commit(), "host": socket.gethostname(), "world_size": str(world_size)}
    job = slurm_env()
    if job is not None:
        slurm = {
            "slurm_job_id": job.job_id,
            "slurm_array_job_id": job.array_job_id,
            "slurm_array_task_id": job.array_task_id,
            "slurm_restart_count": job.restart_count,
        }
        tags.update({k: str(v) for k, v in slurm.items() if v is not None})
    return tags


# ---------------------------------------------------------------- the run record -----
@dataclass
class RunRecord:
    """What ties an output dir to its MLflow run."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    restarts: int = 0

    @classmethod
    def load(cls, ckpt_dir: Path) -> RunRecord | None:
        path = Path(ckpt_dir) / RUN_RECORD
        if not path.exists():
            return None
        return cls(**json.loads(path.read_text()))

    def save(self, ckpt_dir: Path) -> None:
        path = Path(ckpt_dir) / RUN_RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)


def client(uri: str):
    """The one MLflow client factory: every phiscale command talks to MLflow through a client from here."""
    from mlflow.tracking import MlflowClient

    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return MlflowClient(tracking_uri=uri)
    # The first client of a new sqlite store creates its tables (alembic migrations); processes
    # that start together (SLURM array tasks, Hydra multirun jobs) would race on it and fail with
    # "Online migration expected to match one row". One lock file beside the database serialises it.
    import fcntl

    with open(uri[len(prefix) :] + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return MlflowClient(tracking_uri=uri)


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Beside a sqlite store: `<db dir>/mlartifacts/<experiment>` (MLflow's default would be
    ./mlruns of whatever directory a job happens to start in). Servers choose their own."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (Path(tracking_uri[len(prefix) :]).parent / "mlartifacts" / safe).as_uri()


def get_or_create_experiment(mlflow, name: str) -> str:
    """The id of experiment `name`, created (once, whoever races) if missing."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise PhiscaleError(
                f"MLflow experiment {name!r} is deleted; restore it in the UI or use tracking.experiment=<new name>"
            )
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location(mlflow.tracking_uri, name))
    except Exception:  # another rank or array task created it first
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


# ---------------------------------------------------------------- the logger -----
class MLflowRunLogger(Logger):
    """A Lightning logger for one MLflow run that survives restarts.

    Rank 0 only (Lightning calls loggers on rank 0). Metrics are buffered and sent with
    `log_batch` (one round trip per flush, not per value) and flushed before every checkpoint,
    so a restart re-logs nothing the run already has: every metric keeps its highest step and
    any step at or below it is dropped.
    """

    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        ckpt_dir: Path,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        flush_every_s: float = 15.0,
        flush_every_n: int = 500,
    ) -> None:
        super().__init__()
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.run_name = run_name
        self.ckpt_dir = Path(ckpt_dir)
        self._params = dict(params)
        self._tags = dict(tags)
        self._flush_every_s = flush_every_s
        self._flush_every_n = flush_every_n
        self._buffer: list = []
        self._last_flush = time.monotonic()
        self._last_step: dict[str, int] = {}
        self.record: RunRecord | None = None
        self.resumed = False
        self._client_obj = None

    # -- lifecycle ---------------------------------------------------------
    @property
    @rank_zero_experiment
    def experiment(self):
        if self._client_obj is None:
            self._client_obj = client(self.tracking_uri)
        return self._client_obj

    @rank_zero_only
    def open(self) -> RunRecord:
        """Create the run, or reopen the one recorded beside the checkpoints."""
        if self.record is not None:
            return self.record
        client = self.experiment
        record = RunRecord.load(self.ckpt_dir)
        if record is None:
            experiment_id = get_or_create_experiment(client, self.experiment_name)
            run = client.create_run(experiment_id, run_name=self.run_name, tags=self._tags)
            record = RunRecord(run.info.run_id, experiment_id, self.tracking_uri, restarts=0)
            self._log_params(client, run.info.run_id)
            record.save(self.ckpt_dir)
        else:
            record = self._reopen(client, record)
        self.record = record
        return record

    def _reopen(self, client, record: RunRecord) -> RunRecord:
        try:
            run = client.get_run(record.run_id)
        except Exception as err:
            raise PhiscaleError(
                f"{self.ckpt_dir / RUN_RECORD} names MLflow run {record.run_id}, which {self.tracking_uri} "
                f"does not hold ({type(err).__name__}); point tracking.uri at the store it was made in "
                f"({record.tracking_uri}) or use a new paths.output_dir"
            ) from None
        self.resumed = True
        record.restarts += 1
        record.save(self.ckpt_dir)
        client.update_run(record.run_id, status="RUNNING")
        for key in run.data.metrics:
            history = client.get_metric_history(record.run_id, key)
            if history:
                self._last_step[key] = max(m.step for m in history)
        # Params are immutable in MLflow: keep the originals, and say what changed.
        changed = sorted(k for k, v in self._params.items() if run.data.params.get(k, v) != v)
        tags = dict(self._tags)  # tags are mutable: host and SLURM ids may differ after a requeue
        if changed:
            tags["changed_on_resume"] = ",".join(changed)[:5000]
        tags["restarts"] = str(record.restarts)
        client.log_batch(record.run_id, tags=[_tag(k, v) for k, v in tags.items()])
        return record

    def _log_params(self, client, run_id: str) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(self._params.items())]
        for i in range(0, len(items), 100):  # MLflow's per-batch param limit
            client.log_batch(run_id, params=items[i : i + 100])

    @property
    def run_id(self) -> str | None:
        return self.record.run_id if self.record else None

    @property
    def run_url(self) -> str:
        """The run's page in the MLflow UI (for a sqlite store: once `ui_command` serves it)."""
        if self.record is None:
            return ui_command(self.tracking_uri)
        return run_url(self.tracking_uri, self.record.experiment_id, self.record.run_id)

    # -- Lightning's Logger interface -----------------------------------------
    @property
    def name(self) -> str:
        return self.experiment_name

    @property
    def version(self) -> str:
        return self.run_id or ""

    @property
    def save_dir(self) -> str:
        return str(self.ckpt_dir)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are the flattened resolved config, logged once at creation (see `open`)."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        self.open()
        step = int(step or 0)
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if step <= self._last_step.get(key, -1):
                continue  # already in the run (logged before a restart)
            self._last_step[key] = step
            self._buffer.append(Metric(key.replace("@", "_"), float(value), now, step))
        self.save()

    @rank_zero_only
    def flush(self) -> None:
        if not self._buffer or self.record is None:
            return
        for i in range(0, len(self._buffer), 1000):  # MLflow's per-batch metric limit
            self.experiment.log_batch(self.record.run_id, metrics=self._buffer[i : i + 1000])
        self._buffer.clear()
        self._last_flush = time.monotonic()

    @rank_zero_only
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.open()
        self.experiment.log_batch(self.record.run_id, tags=[_tag(k, v) for k, v in tags.items()])

    @rank_zero_only
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.open()
        self.experiment.log_artifact(self.record.run_id, str(path), artifact_path)

    @rank_zero_only
    def save(self) -> None:
        """Lightning calls this after every log_metrics: flush only when the buffer is due,
        so a log interval costs no database round trip (checkpoints call `flush` themselves)."""
        if len(self._buffer) >= self._flush_every_n or time.monotonic() - self._last_flush > self._flush_every_s:
            self.flush()

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.flush()

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if self.record is None:
            return
        self.flush()
        self.experiment.set_terminated(self.record.run_id, status=STATUS.get(status, "FAILED"))


def _tag(key: str, value: Any):
    from mlflow.entities import RunTag

    return RunTag(key, str(value)[:5000])


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """Where a user browses one run: the server's run page, or the local `mlflow ui`'s."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def ui_command(tracking_uri: str) -> str:
    """What a user runs to browse the runs."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000"


def log_evaluation(
    tracking_uri: str,
    metrics: Mapping[str, float],
    *,
    step: int,
    run_id: str | None = None,
    experiment: str = "phiscale",
    run_name: str = "eval",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log evaluation metrics into `run_id` (the checkpoint's own run) or a new run; returns its id."""
    from mlflow.entities import Metric

    mlflow = client(tracking_uri)
    if run_id is None:
        experiment_id = get_or_create_experiment(mlflow, experiment)
        run_id = mlflow.create_run(experiment_id, run_name=run_name, tags=dict(tags or {})).info.run_id
        mlflow.set_terminated(run_id, "FINISHED")
    now = int(time.time() * 1000)
    mlflow.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()],
        tags=[_tag(k, v) for k, v in (tags or {}).items()],
    )
    return run_id


def log_report_run(tracking_uri: str, experiment_id: str, files: Sequence[Path], *, run_name: str,
                   tags: Mapping[str, str]) -> str:
    """A finished run holding a report's `files` as artifacts (FAILED if an upload fails)."""
    mlflow = client(tracking_uri)
    run_id = mlflow.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
    try:
        for path in files:
            mlflow.log_artifact(run_id, str(path))
    except BaseException:
        mlflow.set_terminated(run_id, status="FAILED")
        raise
    mlflow.set_terminated(run_id, status="FINISHED")
    return run_id
