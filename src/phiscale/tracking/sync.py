"""`phiscale-sync`: send journals that training could not (offline runs, outages at the end),
and mark runs that died without a goodbye as KILLED (`--reap`).

A run is `lost` when MLflow says RUNNING but its heartbeat (`phiscale.heartbeat`, written by the
sender every `phiscale.heartbeat_s`) is older than LOST_AFTER heartbeats.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phiscale.errors import PhiscaleError
from phiscale.tracking.journal import JOURNAL, TRACKING_DIR, Journal, RunRecord, read_entries, tracking_dir
from phiscale.tracking.sender import HEARTBEAT_TAG, Sender
from phiscale.tracking.store import check_reachable, client, normalize_tracking_uri
from phiscale.tracking.tags import HEARTBEAT_S_TAG, OUTPUT_DIR_TAG

LOST_AFTER = 5  # heartbeats missed before a RUNNING run counts as lost
REAPED_TAG = "phiscale.reaped"


@dataclass
class SyncResult:
    output_dir: Path
    run_id: str | None
    sent_entries: int
    sent_metrics: int
    left: int
    skipped: str | None = None  # why nothing was sent (a live sender holds the journal)


def sync_output_dir(output_dir: str | Path, *, tracking_uri: str | None = None, timeout_s: float | None = None,
                    log: Callable[[str], None] = print) -> SyncResult:
    """Send the journal of `output_dir` to its store (or `tracking_uri`), retrying until `timeout_s`."""
    output_dir = Path(output_dir).resolve()
    directory = tracking_dir(output_dir)
    record = RunRecord.load(directory)
    if record is None:
        raise PhiscaleError(f"{output_dir} holds no phiscale journal ({directory}/run.json); give a run's output dir")
    uri = normalize_tracking_uri(tracking_uri or record.tracking_uri)
    if record.run_id and uri != record.tracking_uri:
        raise PhiscaleError(f"{output_dir} is MLflow run {record.run_id} at {record.tracking_uri}; "
                            f"it cannot be sent to {uri} (drop --tracking-uri)")
    check_reachable(uri)
    journal = Journal(directory)
    sender = Sender(journal, record, uri, output_dir=output_dir, heartbeat_s=None, log=log)
    holder = sender.acquire()
    if holder is not None:
        journal.close()
        return SyncResult(output_dir, record.run_id, 0, 0, journal.backlog,
                          skipped=f"process {holder} is sending it now (the run is live)")
    try:
        left = sender.send_all(timeout_s)
    finally:
        journal.close()
        sender.release()
    return SyncResult(output_dir, record.run_id, sender.sent_entries, sender.sent_metrics, left)


def find_output_dirs(root: str | Path) -> Iterator[Path]:
    """Every run output dir under `root` (a dir holding tracking/journal.jsonl)."""
    root = Path(root)
    if not root.is_dir():
        raise PhiscaleError(f"{root} is not a directory; give the root that holds the runs' output dirs")
    for journal in sorted(root.rglob(f"{TRACKING_DIR}/{JOURNAL}")):
        yield journal.parent.parent


# ---------------------------------------------------------------- lost runs -----
def heartbeat_age_s(tags: dict[str, str], start_ms: int | None, now_s: float) -> float | None:
    """Seconds since the run's last sign of life (its heartbeat, else its start); None if unknown."""
    beat = tags.get(HEARTBEAT_TAG)
    if beat is not None:
        try:
            return now_s - float(beat)
        except ValueError:
            return None
    return now_s - start_ms / 1000 if start_ms else None


def is_lost(status: str, tags: dict[str, str], start_ms: int | None, now_s: float | None = None) -> bool:
    """RUNNING in MLflow, but silent for more than LOST_AFTER heartbeats."""
    if status != "RUNNING" or HEARTBEAT_S_TAG not in tags:
        return False
    age = heartbeat_age_s(tags, start_ms, time.time() if now_s is None else now_s)
    try:
        period = float(tags[HEARTBEAT_S_TAG])
    except ValueError:
        return False
    return age is not None and age > LOST_AFTER * period


def alive_in_output_dir(output_dir: str | None, last_beat_s: float, now_s: float, quiet_s: float) -> bool:
    """The run's output dir shows it is not dead: it was (re)opened after its last heartbeat (a
    resume), or its journal was written within `quiet_s` (training on while the store is away)."""
    if not output_dir:
        return False
    entries, _ = read_entries(tracking_dir(output_dir) / JOURNAL)
    if not entries:
        return False
    opened = [e["t"] for e in entries if e["op"] == "run" or (e["op"] == "status" and e["status"] == "RUNNING")]
    reopened = bool(opened) and opened[-1] / 1000 > last_beat_s
    return reopened or now_s - entries[-1]["t"] / 1000 < quiet_s


@dataclass
class Reaped:
    run_id: str
    run_name: str
    silent_s: float
    action: str  # "killed", or "alive" (left alone: its output dir shows a resume or recent journaling)


def reap(experiment: str, tracking_uri: str, *, now_s: float | None = None) -> list[Reaped]:
    """Mark the lost runs of `experiment` KILLED (with a tag saying why), unless their output dir shows
    them alive."""
    uri = normalize_tracking_uri(tracking_uri)
    check_reachable(uri, must_exist=True)
    mlflow = client(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        raise PhiscaleError(f"no MLflow experiment {experiment!r} at {uri}; pass the experiment the runs are in")
    now_s = time.time() if now_s is None else now_s
    reaped = []
    for run in _running(mlflow, found.experiment_id):
        tags, info = run.data.tags, run.info
        if not is_lost(info.status, tags, info.start_time, now_s):
            continue
        silent = heartbeat_age_s(tags, info.start_time, now_s) or 0.0
        quiet_s = LOST_AFTER * float(tags[HEARTBEAT_S_TAG])
        if alive_in_output_dir(tags.get(OUTPUT_DIR_TAG), now_s - silent, now_s, quiet_s):
            reaped.append(Reaped(info.run_id, info.run_name, silent, "alive"))
            continue
        last = datetime.fromtimestamp(now_s - silent, tz=timezone.utc).isoformat(timespec="seconds")
        mlflow.set_tag(info.run_id, REAPED_TAG, f"no heartbeat since {last}; marked KILLED by phiscale-sync --reap")
        mlflow.set_terminated(info.run_id, status="KILLED")
        reaped.append(Reaped(info.run_id, info.run_name, silent, "killed"))
    return reaped


def _running(mlflow, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        page = mlflow.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000,
                                  page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def describe(result: SyncResult) -> str:
    """One line per synced output dir."""
    if result.skipped:
        return f"{result.output_dir}: skipped, {result.skipped}"
    state = "complete" if result.left == 0 else f"{result.left} entries still unsent (store unreachable)"
    return (f"{result.output_dir}: sent {result.sent_entries} entries ({result.sent_metrics} metric values) to "
            f"MLflow run {result.run_id}; {state}")


__all__ = ["sync_output_dir", "find_output_dirs", "reap", "is_lost", "describe", "SyncResult"]
