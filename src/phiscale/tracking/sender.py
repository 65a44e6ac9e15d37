"""The sender: drains a run's journal into MLflow, in order, surviving outages of the store.

It runs as a background thread of the training process (rank 0), or in the foreground of
`phiscale-sync`. While the store is unreachable (refused, hanging, 5xx, timeouts, "database is
locked") it retries with capped exponential backoff; training only ever appends to the journal.
Every entry is sent at least once and stored once: metrics carry their original timestamps (MLflow
stores a repeated identical metric once), params and tags are idempotent, and a lost reply to
`create_run` is found again through the `phiscale.run_key` tag. Two log lines per outage at most:
when the store went away, and when the backlog was drained. A locked server that refuses the
credentials (401) or the permission (403), say after a password was changed, is one more kind of
outage: one line, a retry every `retry_max_s` (a rewritten ~/.mlflow/credentials is picked up),
and `phiscale-sync` sends the journal later with the right credentials.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phiscale import collector_paused
from phiscale.tracking.journal import LOCK, Journal, RunRecord
from phiscale.tracking.store import (
    CREDENTIALS_FIX,
    client,
    create_run,
    describe_error,
    get_or_create_experiment,
    is_auth_error,
    is_permanent,
    run_url,
    signed_in_as,
)

RUN_KEY_TAG = "phiscale.run_key"
HEARTBEAT_TAG = "phiscale.heartbeat"  # unix seconds, updated by the sender every heartbeat_s
# MLflow's per-request limits (docs: "log_batch"): 1000 metrics, 100 params, 100 tags.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MLFLOW_STATUS = {"RUNNING", "FINISHED", "FAILED", "KILLED"}


OUTAGE = object()  # what `_attempt` says when the store did not answer


class Refused(Exception):
    """An entry the store can never take (MLflow said so, or its file is gone)."""


def _print(message: str) -> None:
    print(message, flush=True)


class Sender:
    """Sends `journal` into the run of `record` at `uri`; see the module docstring."""

    def __init__(
        self,
        journal: Journal,
        record: RunRecord,
        uri: str,
        *,
        output_dir: str | os.PathLike[str],
        heartbeat_s: float | None = 60.0,
        retry_max_s: float = 30.0,
        log: Callable[[str], None] = _print,
    ) -> None:
        self.journal = journal
        self.record = record
        self.uri = uri
        self.output_dir = Path(output_dir)
        self.heartbeat_s = heartbeat_s
        self.retry_max_s = retry_max_s
        self.log = log
        self.down_since: float | None = None
        self.locked_out = False  # the last try was refused with 401/403
        self._told_locked_out = False  # its one line is printed (until the backlog drains)
        self.sent_entries = self.sent_metrics = 0
        self._outage_entries = self._outage_metrics = 0
        self._client = None
        self._lock_file = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # finish once the backlog is empty
        self._abandon = threading.Event()  # give up now (drain timeout passed)
        self._last_heartbeat = 0.0
        self.announce_run = False  # print the run's link when this sender creates it (RunLogger.hold_sending)

    # -- ownership of the journal --------------------------------------------------------------
    def acquire(self) -> int | None:
        """Become the journal's only sender; returns None, or the pid of the live process that is."""
        path = self.journal.dir / LOCK
        self._lock_file = open(path, "a+")  # noqa: SIM115 (held for the sender's life)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip()
            self._lock_file.close()
            self._lock_file = None
            return int(holder) if holder.isdigit() else -1
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        return None

    def release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # -- running in the background (training) ---------------------------------------------------
    def start(self) -> Sender:
        """Send from a background thread (once: a second call changes nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="phiscale-sender", daemon=True)
            self._thread.start()
        return self

    def create_run_now(self) -> bool:
        """From the caller's thread, send until the store has the run; False if it is away."""
        while self.record.run_id is None and self.journal.backlog:
            if not self.send_some():
                return False
        return self.record.run_id is not None

    def stop(self, timeout_s: float) -> int:
        """Send what is left, waiting at most `timeout_s`; returns the entries still unsent."""
        self._stop.set()
        with self.journal._lock:
            self.journal._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                self._abandon.set()
        left = self.journal.backlog
        if self._thread is None or not self._thread.is_alive():
            self.release()
        return left

    def _loop(self) -> None:
        delay = 1.0
        while not self._abandon.is_set():
            if not self.journal.backlog:
                if self._stop.is_set():
                    return
                self._heartbeat()
                self.journal.wait_for_entries(self._idle_wait())
                continue
            if self.send_some():
                delay = 1.0
                self._heartbeat()
                continue
            # an outage: back off, but wake at once if abandoned; refused credentials: the longest wait
            self._abandon.wait(self.retry_max_s if self.locked_out else delay)
            delay = min(delay * 2, self.retry_max_s)

    def _idle_wait(self) -> float:
        if not self.heartbeat_s:
            return 1.0
        return max(0.05, min(1.0, self._last_heartbeat + self.heartbeat_s - time.monotonic()))

    def _heartbeat(self) -> None:
        if not self.heartbeat_s or not self.record.run_id or self.down_since is not None or self._stop.is_set():
            return
        if time.monotonic() - self._last_heartbeat < self.heartbeat_s:
            return
        try:
            self.mlflow.set_tag(self.record.run_id, HEARTBEAT_TAG, str(int(time.time())))
            self._last_heartbeat = time.monotonic()
        except Exception as err:  # an outage starts: the next entries will report it
            self._went_down(err)
            self._last_heartbeat = time.monotonic()

    # -- running in the foreground (phiscale-sync) -----------------------------------------------
    def send_all(self, timeout_s: float | None = None) -> int:
        """Send the whole backlog from this thread, retrying outages until `timeout_s`; returns what is left."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = 1.0
        while self.journal.backlog:
            if self.send_some():
                delay = 1.0
                continue
            if self.locked_out or (deadline is not None and time.monotonic() + delay > deadline):
                break  # refused credentials do not change by waiting: sync again with the right ones
            time.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)
        return self.journal.backlog

    # -- sending ---------------------------------------------------------------------------------
    @property
    def mlflow(self):
        if self._client is None:
            with collector_paused():  # MLflow's import and the store's set-up (phiscale/__init__.py)
                self._client = client(self.uri)
        return self._client

    def send_some(self) -> bool:
        """Send the oldest pending entries (one MLflow call's worth); False on an outage."""
        batch = self._next_batch()
        refusal = self._attempt(batch)
        if refusal is OUTAGE:
            return False
        if refusal is None:
            self._sent(batch)
        elif len(batch) == 1:
            self._refuse(batch[0], refusal)
        else:  # find the entry the store refuses; send the others
            for entry in batch:
                refusal = self._attempt([entry])
                if refusal is OUTAGE:
                    return False
                self._sent([entry]) if refusal is None else self._refuse(entry, refusal)
        return True

    def _attempt(self, batch: list[dict[str, Any]]) -> Any:
        """None when sent, OUTAGE when the store is away, else the reason the store refused it."""
        try:
            self._send(batch)
        except Refused as err:
            return str(err)
        except Exception as err:
            if is_permanent(err):
                return describe_error(err)
            self._went_down(err)
            return OUTAGE
        self.locked_out = False
        return None

    def _next_batch(self) -> list[dict[str, Any]]:
        """The oldest entries that go out in one call: one entry, or consecutive metrics/params/tags
        entries up to MLflow's per-call limits."""
        head = self.journal.head(256)
        op = head[0]["op"]
        if op not in ("metrics", "params", "tags"):
            return head[:1]
        limit = {"metrics": MAX_METRICS, "params": MAX_PARAMS, "tags": MAX_TAGS}[op]
        batch, size = [], 0
        for entry in head:
            n = _size(entry)
            if entry["op"] != op or (batch and size + n > limit):
                break
            batch.append(entry)
            size += n
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> None:
        op = batch[0]["op"]
        if op == "run":
            self._create_run(batch[0])
            return
        run_id = self.record.run_id
        if run_id is None:
            raise Refused("the journal has no `run` entry before its first data: it is damaged")
        mlflow = self.mlflow
        if op == "metrics":
            from mlflow.entities import Metric

            values = [Metric(k, float(v), int(t), int(s)) for e in batch for k, v, t, s in e["values"]]
            for i in range(0, len(values), MAX_METRICS):
                mlflow.log_batch(run_id, metrics=values[i : i + MAX_METRICS])
        elif op == "params":
            from mlflow.entities import Param

            items = [Param(k, str(v)) for e in batch for k, v in e["params"].items()]
            for i in range(0, len(items), MAX_PARAMS):
                mlflow.log_batch(run_id, params=items[i : i + MAX_PARAMS])
        elif op == "tags":
            from mlflow.entities import RunTag

            items = [RunTag(k, str(v)) for e in batch for k, v in e["tags"].items()]
            for i in range(0, len(items), MAX_TAGS):
                mlflow.log_batch(run_id, tags=items[i : i + MAX_TAGS])
        elif op == "artifact":
            entry = batch[0]
            path = Path(entry["path"])
            path = path if path.is_absolute() else self.output_dir / path
            if not path.exists():
                raise Refused(f"artifact {path} no longer exists")
            mlflow.log_artifact(run_id, str(path), entry.get("artifact_path"))
        elif op == "inputs":
            self._log_inputs(batch[0])
        elif op == "model":
            self._log_model(batch[0])
        elif op == "status":
            status = batch[0]["status"]
            if status not in MLFLOW_STATUS:
                raise Refused(f"unknown run status {status!r}")
            if status == "RUNNING":
                mlflow.update_run(run_id, status="RUNNING")
            else:
                mlflow.set_terminated(run_id, status=status, end_time=int(batch[0]["t"]))
        else:
            raise Refused(f"unknown journal entry {op!r}")

    def _create_run(self, entry: dict[str, Any]) -> None:
        if self.record.run_id is not None:
            return
        mlflow = self.mlflow
        experiment_id = get_or_create_experiment(mlflow, entry["experiment"])
        key = self.record.run_key
        found = mlflow.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            tags = {**entry["tags"], RUN_KEY_TAG: key}
            run_id = create_run(mlflow, experiment_id, start_time=int(entry["start_ms"]), tags=tags,
                                run_name=entry["run_name"]).info.run_id
        self.record.run_id, self.record.experiment_id = run_id, experiment_id
        self.record.tracking_uri = self.uri
        self.record.save(self.journal.dir)
        if self.announce_run:
            self.log(f"phiscale: MLflow run {run_url(self.uri, experiment_id, run_id)}")

    def _log_inputs(self, entry: dict[str, Any]) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        fields = entry["dataset"]
        dataset = Dataset(name=fields["name"], digest=fields["digest"], source_type=fields["source_type"],
                          source=fields["source"], schema=fields.get("schema"), profile=fields.get("profile"))
        tags = [InputTag(k, v) for k, v in entry.get("tags", {}).items()]
        self.mlflow.log_inputs(self.record.run_id, datasets=[DatasetInput(dataset, tags)])

    def _log_model(self, entry: dict[str, Any]) -> None:
        """The run's model as a LoggedModel (and a registered version): `tracking.models.send_model`."""
        from phiscale.tracking.models import IMAGES, UnsavedModel, send_model

        started = time.monotonic()
        try:
            model_id = send_model(self.mlflow, entry, run_id=self.record.run_id,
                                  experiment_id=self.record.experiment_id, output_dir=self.output_dir,
                                  tracking_uri=self.uri)
        except (FileNotFoundError, UnsavedModel) as err:
            raise Refused(str(err)) from None
        name = entry.get("register")
        what = f", registered as {name} (and {name}{IMAGES}: image files in, class names out)" if name else ""
        self.log(f"phiscale: logged model models:/{model_id}{what} in {time.monotonic() - started:.1f} s")

    # -- bookkeeping and the two log lines ----------------------------------------------------------
    def _sent(self, batch: list[dict[str, Any]]) -> None:
        self.journal.ack(batch[-1]["seq"])
        metrics = sum(len(e["values"]) for e in batch if e["op"] == "metrics")
        self.sent_entries += len(batch)
        self.sent_metrics += metrics
        if self.down_since is not None:
            self._outage_entries += len(batch)
            self._outage_metrics += metrics
            if not self.journal.backlog:
                self.log(f"phiscale: tracking store {self.uri} is back after {time.monotonic() - self.down_since:.0f} s; "
                         f"the backlog is sent ({self._outage_entries} entries, {self._outage_metrics} metric values)")
                self.down_since, self._told_locked_out = None, False
                self._outage_entries = self._outage_metrics = 0

    def _went_down(self, err: BaseException) -> None:
        self._client = None  # a fresh client (and connection pool) for the next try
        if is_auth_error(err) and not self._told_locked_out:
            self.locked_out, self._told_locked_out = True, True
            self.down_since = self.down_since or time.monotonic()
            code = "401: wrong or missing password" if getattr(err, "error_code", "") != "PERMISSION_DENIED" else (
                "403: no permission to write this experiment")  # fmt: skip
            self.log(f"phiscale: tracking server {self.uri} refused {signed_in_as()} ({code}); everything stays in "
                     f"{self.journal.path}, retried every {self.retry_max_s:.0f} s; {CREDENTIALS_FIX}, then "
                     f"phiscale-sync {self.output_dir}")  # fmt: skip
            return
        self.locked_out = is_auth_error(err)
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.log(f"phiscale: tracking store {self.uri} is unreachable ({describe_error(err)}); training goes "
                     f"on, journaling to {self.journal.path} and retrying")

    def _refuse(self, entry: dict[str, Any], reason: str) -> None:
        self.journal.reject(entry, reason)
        self.journal.ack(entry["seq"])
        self.log(f"phiscale: MLflow refused a `{entry['op']}` entry ({reason}); kept in {self.journal.dir}/rejected.jsonl")


def _size(entry: dict[str, Any]) -> int:
    if entry["op"] == "metrics":
        return len(entry["values"])
    return len(entry.get(entry["op"], {}))
