"""Tracking: the only package that writes to MLflow.

    store.py    URIs, the one client factory, the one reachability check, experiments
    journal.py  the durable journal of a run (<output_dir>/tracking/), and its RunRecord
    sender.py   drains a journal into MLflow, surviving outages (retries, backoff, heartbeat)
    logger.py   the Lightning logger of a training run (appends; a sender thread sends)
    sync.py     phiscale-sync: send journals later; reap runs that died without a goodbye
    tags.py     params from the config, tags from the environment
    writes.py   phiscale-eval's and phiscale-report's writes
"""

from phiscale.tracking.journal import Journal, RunRecord, tracking_dir
from phiscale.tracking.logger import MODES, RunLogger
from phiscale.tracking.sender import Sender
from phiscale.tracking.store import (
    DEFAULT_URI,
    check_reachable,
    client,
    get_or_create_experiment,
    is_server,
    normalize_tracking_uri,
    resolve_uri,
    run_url,
    short_http_timeouts,
    ui_command,
)
from phiscale.tracking.sync import find_output_dirs, is_lost, reap, sync_output_dir
from phiscale.tracking.tags import environment_tags, flatten_config, system_tags
from phiscale.tracking.writes import log_evaluation, log_report_run

__all__ = [
    "DEFAULT_URI",
    "MODES",
    "Journal",
    "RunLogger",
    "RunRecord",
    "Sender",
    "check_reachable",
    "client",
    "environment_tags",
    "find_output_dirs",
    "flatten_config",
    "get_or_create_experiment",
    "is_lost",
    "is_server",
    "log_evaluation",
    "log_report_run",
    "normalize_tracking_uri",
    "reap",
    "resolve_uri",
    "run_url",
    "short_http_timeouts",
    "sync_output_dir",
    "system_tags",
    "tracking_dir",
    "ui_command",
]
