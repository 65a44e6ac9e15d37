"""The Lightning logger of a training run: rank 0 appends to the run's journal; a sender thread sends.

The training step never waits on the network. The run's identity lives in
`<output_dir>/tracking/run.json`: starting again with the same output dir continues the same run
(params not re-logged, changed ones named in `changed_on_resume`, and every metric step the
journal already holds is dropped, so nothing is logged twice), and sends any backlog first.

Modes (`tracking.mode`):
- `online`: the store must answer at start (a wrong URI fails in seconds); later outages are
  survived (journal + retries).
- `online_tolerant`: start even when the store is down; it catches up when it is back.
- `offline`: never contact the store; `phiscale-sync <output_dir>` sends the journal later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from phiscale.errors import PhiscaleError
from phiscale.tracking.journal import Journal, RunRecord, now_ms, read_entries, tracking_dir
from phiscale.tracking.sender import Sender
from phiscale.tracking.store import SQLITE, client, is_permanent, run_url, short_http_timeouts, signed_in_as
from phiscale.tracking.system_metrics import PREFIX as SYSTEM_PREFIX
from phiscale.tracking.system_metrics import SystemMetrics
from phiscale.tracking.tags import HEARTBEAT_S_TAG, OUTPUT_DIR_TAG, TAG_VALUE_LIMIT

MODES = ("online", "online_tolerant", "offline")
# How a run ended (phiscale's words) -> MLflow's run status.
STATUS = {"finished": "FINISHED", "success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
ERROR_TAG = "phiscale.error"


class RunLogger(Logger):
    """See the module docstring. Rank 0 only (Lightning calls loggers on rank 0)."""

    def __init__(
        self,
        *,
        output_dir: str | os.PathLike[str],
        tracking_uri: str,
        experiment: str,
        run_name: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        mode: str = "online",
        heartbeat_s: float = 60.0,
        retry_max_s: float = 30.0,
        connect_timeout_s: float = 10.0,
        system_metrics_s: float = 0.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise PhiscaleError(f"tracking.mode={mode!r} is not one of {', '.join(MODES)}")
        self.output_dir = Path(output_dir)
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.run_name = run_name
        self.mode = mode
        self._params = dict(params)
        self._tags = {**tags, OUTPUT_DIR_TAG: str(self.output_dir), HEARTBEAT_S_TAG: f"{heartbeat_s:g}"}
        self._heartbeat_s = heartbeat_s
        self._retry_max_s = retry_max_s
        self._connect_timeout_s = connect_timeout_s
        self._system_metrics_s = system_metrics_s
        self._system_metrics: SystemMetrics | None = None
        self._sync_at_save = False
        self._hold_sending = False
        self.journal: Journal | None = None
        self.record: RunRecord | None = None
        self.sender: Sender | None = None
        self.resumed = False

    # -- the run ----------------------------------------------------------------------------
    @rank_zero_only
    def open(self) -> RunRecord:
        """Create the run, or continue the one of this output dir; start sending (unless offline)."""
        if self.record is not None:
            return self.record
        directory = tracking_dir(self.output_dir)
        record = RunRecord.load(directory)
        if record is not None and record.run_id and record.tracking_uri != self.tracking_uri:
            raise PhiscaleError(
                f"{directory}/run.json belongs to MLflow run {record.run_id} at {record.tracking_uri}, not "
                f"{self.tracking_uri}; point tracking.uri at that store, or use a new paths.output_dir"
            )
        journal = Journal(directory)
        if record is None:
            record = RunRecord.new(self.tracking_uri, self.experiment_name, self.run_name)
            record.save(directory)
            journal.append("run", experiment=self.experiment_name, run_name=self.run_name, tags=_cut(self._tags),
                           start_ms=now_ms())
            journal.append("params", params=self._params)
        else:
            self.resumed = True
            record.restarts += 1
            record.tracking_uri = self.tracking_uri
            record.save(directory)
            # Params are immutable in MLflow: keep the originals, and say what changed.
            changed = sorted(k for k, v in self._params.items() if journal.params.get(k, v) != v)
            tags = dict(self._tags, restarts=str(record.restarts))  # host and SLURM ids may differ now
            if changed:
                tags["changed_on_resume"] = ",".join(changed)
            journal.append("tags", tags=_cut(tags))
            journal.append("status", status="RUNNING")
        self.journal, self.record = journal, record
        if self.mode != "offline":
            self._start_sender()
        if self._system_metrics_s > 0:  # steps continue where an earlier attempt of this run stopped
            first = journal.last_step.get(f"{SYSTEM_PREFIX}cpu_utilization_percentage", -1) + 1
            self._system_metrics = SystemMetrics(self._log_system, self._system_metrics_s, self.output_dir,
                                                 first_step=first).start()
        return record

    def _log_system(self, values: Mapping[str, float], step: int) -> None:
        ts = now_ms()
        self.journal.append("metrics", values=[[k, v, ts, step] for k, v in values.items()])

    def _start_sender(self) -> None:
        short_http_timeouts(self._connect_timeout_s)
        self.sender = Sender(self.journal, self.record, self.tracking_uri, output_dir=self.output_dir,
                             heartbeat_s=self._heartbeat_s, retry_max_s=self._retry_max_s)
        holder = self.sender.acquire()
        if holder is not None:
            raise PhiscaleError(
                f"process {holder} is sending {self.journal.dir} already (another run in this output dir, or "
                "phiscale-sync): wait for it, or use a new paths.output_dir"
            )
        # A local sqlite file refuses nobody: with the sender held, its run is made from the first step on.
        local_and_held = self._hold_sending and self.tracking_uri.startswith(SQLITE)
        if self.mode == "online":
            if self.resumed and self.record.run_id:
                self._check_run_exists()
            if not local_and_held:
                self.sender.create_run_now()  # the run's URL at start; an outage here is survived like any
            if self.sender.locked_out:  # signed in, but this experiment is not the user's to write
                self.sender.release()
                raise PhiscaleError(
                    f"tracking server {self.tracking_uri} refused to create the run in experiment "
                    f"{self.experiment_name!r} as {signed_in_as()}; with a 403 ask its admin for EDIT on it (phiscale-server grant), "
                    "or use tracking.experiment=<one of yours>"
                )
        self.sender.announce_run = local_and_held and self.record.run_id is None  # its link, once made
        if not self._hold_sending:
            self.sender.start()

    def hold_sending(self) -> None:
        """Before `open`: start sending only at `start_sending` (SendFromFirstStep: a single-process
        run's first step), so that MLflow's import and the store's set-up do not slow the run's start;
        the journal keeps everything meanwhile. A server is still asked at `open` (online mode)."""
        self._hold_sending = True

    @rank_zero_only
    def start_sending(self) -> None:
        """Start the held sender (once); `close` and `wait_sent` start it too."""
        if self.sender is not None:
            self.sender.start()

    def _check_run_exists(self) -> None:
        try:
            client(self.tracking_uri).get_run(self.record.run_id)
        except Exception as err:
            if is_permanent(err):
                raise PhiscaleError(
                    f"{self.journal.dir}/run.json names MLflow run {self.record.run_id}, which {self.tracking_uri} "
                    "does not hold; point tracking.uri at the store it was made in, or use a new paths.output_dir"
                ) from None
            # otherwise the store is away right now: the sender retries

    @rank_zero_only
    def close(self, status: str, drain_timeout_s: float, error: str | None = None) -> int:
        """Journal the end (status, error), make it durable, and send what is left within
        `drain_timeout_s`; returns the entries still unsent (0 when the store has everything).
        On a full disk the end is sent all the same (kept in memory: MLflow shows how the run ended)."""
        if self.journal is None:
            return 0
        if self._system_metrics is not None:
            self._system_metrics.stop()
        if error:
            self.journal.append("tags", tags={ERROR_TAG: error[:TAG_VALUE_LIMIT]}, keep_if_full=True)
        self.journal.append("status", status=STATUS.get(status, "FAILED"), keep_if_full=True)
        self.journal.sync()
        self.start_sending()  # a run that ended before its first step still sends its end
        left = self.journal.backlog if self.sender is None else self.sender.stop(drain_timeout_s)
        self.journal.close()
        return left

    def wait_sent(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until the store holds everything journaled so far; False if it does
        not by then (offline, the store away, or the run not created yet). For a reader in another process
        that must see this run's latest values (a sweep's early stopping)."""
        import time

        if self.journal is None or self.sender is None:
            return False
        self.sender.start()
        target, deadline = self.journal.next_seq - 1, time.monotonic() + timeout_s
        while self.journal.sent_seq < target or not self.record.run_id:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)  # the sender thread acknowledges as the store answers
        return True

    @property
    def run_id(self) -> str | None:
        return self.record.run_id if self.record else None

    @property
    def run_url(self) -> str | None:
        """The run's page in the MLflow UI; None while the store does not have the run yet."""
        if self.record is None or not self.record.run_id:
            return None
        return run_url(self.tracking_uri, self.record.experiment_id, self.record.run_id)

    # -- what training logs -------------------------------------------------------------------
    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.open()
        step = int(step or 0)
        ts = now_ms()
        values = []
        for key, value in metrics.items():
            key = key.replace("@", "_")
            if step <= self.journal.last_step.get(key, -1):
                continue  # already journaled (by this run before a restart)
            values.append([key, float(value), ts, step])
        if values:
            self.journal.append("metrics", values=values)

    @rank_zero_only
    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.open()
        self.journal.append("tags", tags=_cut(tags))

    @rank_zero_only
    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Upload `path` (a file in the output dir is recorded relative to it, so a journal written on
        one node can be synced from another that mounts the output dir elsewhere)."""
        self.open()
        self.journal.append("artifact", path=self._recorded(path), artifact_path=artifact_path)

    @rank_zero_only
    def log_model(self, path: str | os.PathLike[str], *, params: Mapping[str, Any], metrics: Mapping[str, float],
                  step: int, register: str | None = None) -> None:
        """A saved MLflow model (`tracking.models.save_serving_model`) to log as the run's LoggedModel
        with `params` and the val `metrics` of the checkpoint at `step`; with `register`, a new version
        of that name. The metrics are linked as the points the run already holds (the same value,
        time and step, found in the journal: MLflow keeps one copy, so the run's history stays as it
        was); one the journal lacks is linked at `step`."""
        self.open()
        recorded = self._recorded(path)
        self.journal.sync()
        points = {}
        for entry in read_entries(self.journal.path)[0]:
            if entry["op"] != "metrics":
                continue
            for key, value, ts, at in entry["values"]:
                if key in metrics and at <= step and value == float(metrics[key]):
                    points[key] = [key, float(value), int(ts), int(at)]  # the latest such point wins
        linked = [points.get(k, [k, float(v), now_ms(), int(step)]) for k, v in metrics.items()]
        self.journal.append("model", path=recorded, params={k: str(v) for k, v in params.items()},
                            metrics=linked, step=int(step), register=register)

    def _recorded(self, path: str | os.PathLike[str]) -> str:
        """`path` as the journal records it: relative to the output dir when inside it (another node
        may mount that dir elsewhere), else absolute."""
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.output_dir.resolve()))
        except ValueError:
            return str(path)

    @rank_zero_only
    def log_dataset(self, dataset: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
        """The run's input dataset (MLflow's inputs: name, digest, source, profile)."""
        self.open()
        self.journal.append("inputs", dataset=dict(dataset), tags=dict(tags or {}))

    # -- Lightning's Logger interface ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.experiment_name

    @property
    def version(self) -> str:
        return self.run_id or ""

    @property
    def save_dir(self) -> str:
        return str(self.output_dir)

    @property
    @rank_zero_experiment
    def experiment(self):
        """The store's MLflow client, made when first used: Lightning reads this property at set-up,
        and making the client there would import MLflow before the first step (issue 31)."""
        return ClientOnFirstUse(self.tracking_uri)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Params are the flattened resolved config, journaled once at creation (see `open`)."""

    @rank_zero_only
    def flush(self) -> None:
        """Make the journal durable (fsync): called before every checkpoint is written, and once more
        at the next `save`, when Lightning has handed over the checkpointed step's own metrics."""
        if self.journal is not None:
            self.journal.sync()
            self._sync_at_save = True

    @rank_zero_only
    def save(self) -> None:
        """Lightning calls this after each batch's metrics are logged (appends need nothing more)."""
        if self._sync_at_save and self.journal is not None:
            self.journal.sync()
            self._sync_at_save = False

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning's end of fit: only make the journal durable; `close` ends the run."""
        self.flush()


class ClientOnFirstUse:
    """`store.client(uri)`, made when an attribute is first asked for."""

    def __init__(self, uri: str) -> None:
        self._uri, self._client = uri, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle and friends ask for these: no reason to make a client
            raise AttributeError(name)
        if self._client is None:
            self._client = client(self._uri)
        return getattr(self._client, name)


def _cut(tags: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v)[:TAG_VALUE_LIMIT] for k, v in tags.items()}
