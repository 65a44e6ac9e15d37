"""Tracking: the only package that writes to MLflow.

    store.py    URIs, the one client factory, the one reachability check, experiments
    journal.py  the durable journal of a run (<output_dir>/tracking/), and its RunRecord
    sender.py   drains a journal into MLflow, surviving outages (retries, backoff, heartbeat)
    logger.py   the Lightning logger of a training run (appends; a sender thread sends)
    sync.py     phiscale-sync: send journals later; reap runs that died without a goodbye
    tags.py     params from the config, tags from the environment
    system_metrics.py  CPU, memory, disk, network and GPU samples for MLflow's system/ metrics
    writes.py   phiscale-eval's and phiscale-report's writes; a sweep's parent run
    models.py   a finished run's model: saved beside the run, logged as its MLflow LoggedModel
    registry.py a version of a registered name per run, and the `best` alias that follows the best one

The names below are imported on first use: a command that only needs the store or the writes
(`phiscale-sweep submit`, which must return in a second or two) does not pay for Lightning, which
the logger imports. May import `phiscale.slurm` (the job's tags), `errors` and `paths`; never
`train` (the logger is handed what it logs), `sweeps`, `report`, `server` or `cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the module of this package that defines it
_EXPORTS = {
    "Journal": "journal", "RunRecord": "journal", "tracking_dir": "journal",
    "MODES": "logger", "RunLogger": "logger",
    "Sender": "sender",
    "DEFAULT_URI": "store", "check_reachable": "store", "client": "store", "get_or_create_experiment": "store",
    "is_server": "store", "normalize_tracking_uri": "store", "resolve_uri": "store", "run_url": "store",
    "experiment_url": "store", "short_http_timeouts": "store", "ui_command": "store",
    "find_output_dirs": "sync", "is_lost": "sync", "reap": "sync", "sync_output_dir": "sync",
    "environment_tags": "tags", "flatten_config": "tags", "system_tags": "tags",
    "create_parent_run": "writes", "log_evaluation": "writes", "log_report_run": "writes",
    "set_run_status": "writes", "tag_run": "writes",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`phiscale.tracking.<name>`: import its module now, once (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
