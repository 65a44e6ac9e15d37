"""An experiment's runs, or one sweep's, from MLflow -> one row per run, a point's seeds as one row,
the Pareto front.

Reads the run schema of docs/ARCHITECTURE.md (tags `model`, `phi`, `*_mult`, `world_size`, `seed`,
`sweep_point`; params `aug.*`; metrics `model/macs_eval`, `model/params`, `val/top1_best` or
`val/top1`, `perf/images_per_s`). Earlier report runs and sweeps' parent runs are skipped when
reading. Runs still RUNNING are read with their latest metrics; RUNNING runs whose heartbeat
stopped are `lost`.

The runs of one sweep point that differ only in their seed (a sweep file's `seeds:`) are one row:
best val top-1 and images/s as mean ± standard deviation (sample, n-1), the Pareto front on the
means. `read_sweep` reads only that sweep's runs (the children of its parent run): one row per
point, its latest attempt, with the sweep's state (pending … missing) per point.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from phiscale import tracking
from phiscale.errors import PhiscaleError
from phiscale.models.scaling import BASE_RESOLUTION
from phiscale.sweeps.record import PARENT_TAG, SWEEP_ID_TAG
from phiscale.sweeps.series import LEVEL_TAG, SERIES_TAG, TARGET_TAG
from phiscale.sweeps.status import best_top1, last_images_per_s

log = logging.getLogger(__name__)

REPORT_TAG = "phiscale.report"
REPORT_RUN_NAME = "report"
CONNECT_TIMEOUT_S = 10.0

MACS_KEYS = ("model/macs_eval", "model/macs_train")
PARAMS_KEY = "model/params"

# The augmentation column (params `aug.*`, logged by training; an absent param means off): the main
# settings in this order, each shown only when on; RandAugment with its ops and magnitude.
AUG_SETTINGS = (("aug.policy", "{}"), ("aug.mixup", "mixup {}"), ("aug.cutmix", "cutmix {}"),
                ("aug.erasing", "erasing {}"))
AUG_DETAILS: dict[str, Callable[[dict[str, str]], str]] = {
    "randaugment": lambda p: f"randaugment n{p.get('aug.num_ops', '?')} m{p.get('aug.magnitude', '?')}",
}
AUG_OFF = frozenset({"", "none", "null", "false", "off"})
NO_AUG = "none"


@dataclass
class RunRow:
    """One training run as the report sees it (None = the run did not log it)."""

    run_id: str
    run_name: str
    model: str
    family: str
    phi: float | None
    depth_mult: float | None
    width_mult: float | None
    resolution_mult: float | None
    resolution: int | None
    params: float | None
    macs: float | None
    top1: float | None  # best validation top-1
    images_per_s: float | None  # last logged training throughput
    device_hours: float | None
    status: str
    pareto: bool = False
    top1_std: float | None = None  # over the seeds of a point (None: one run)
    images_per_s_std: float | None = None
    seeds: str = ""  # "0,1,2": the seeds of the row's runs ("" = not tagged)
    runs: int = 1  # runs in the row (a point's seeds)
    aug: str = NO_AUG  # augmentation settings, e.g. "randaugment n2 m9, mixup 0.2"
    state: str | None = None  # the sweep's state of the point (report --sweep), e.g. "finished"
    sweep: str = ""  # the sweep id (or name) the run belongs to
    sweep_point: int | None = None  # its point in that sweep (the seeds of a point share it)
    series: str = ""  # a scaling series point (sweeps/series.py): its series, comma-separated where shared
    series_level: float | None = None  # its level φ
    series_macs_target: float | None = None  # the MACs ratio the formula asks of the level over the series' base

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"

# ---------------------------------------------------------------- reading runs -----
def read_runs(experiment: str, tracking_uri: str | None = None) -> tuple[str, list[RunRow]]:
    """(experiment id, one row per run sorted by MACs with the Pareto front marked); report runs and
    sweep parents skipped, and of a sweep run trained twice (a new run for the same index) the latest."""
    uri = tracking.resolve_uri(tracking_uri)
    tracking.check_reachable(uri, CONNECT_TIMEOUT_S, must_exist=True)
    client = tracking.client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments(max_results=50))
        raise PhiscaleError(
            f"experiment {experiment!r} not found at {uri}; "
            f"existing: {', '.join(names) or 'none'} (pass --experiment NAME)"
        )
    now_ms = int(time.time() * 1000)
    latest: dict[Any, Any] = {}
    for run in _search_all(client, exp.experiment_id):
        tags = run.data.tags
        if tags.get(REPORT_TAG) == "true" or tags.get(PARENT_TAG) == "true":
            continue
        sweep = tags.get(SWEEP_ID_TAG) or tags.get("sweep")
        key = (sweep, tags["sweep_index"]) if sweep and "sweep_index" in tags else run.info.run_id
        if key not in latest or (run.info.start_time or 0) > (latest[key].info.start_time or 0):
            latest[key] = run
    rows = [row_from_run(run, client, now_ms) for run in latest.values()]
    if not rows:
        raise PhiscaleError(
            f"experiment {experiment!r} at {uri} has no training runs yet: train some first "
            "(e.g. `phiscale-sweep sweeps/phi.yaml` prints the commands)"
        )
    log.info("read %d runs from experiment %r at %s", len(rows), experiment, uri)
    return exp.experiment_id, sort_and_mark(rows)


def read_sweep(sweep: str, root: str | Path, tracking_uri: str | None = None) -> tuple[Any, str, list[RunRow]]:
    """(record, experiment id, one row per run of the sweep: its latest attempt, with its state).

    Only the sweep's runs are read (the children of its parent run); a run that never started is a
    row too, with its state and no metrics.
    """
    from phiscale.sweeps.record import find_record
    from phiscale.sweeps.status import sweep_status

    record = find_record(sweep, root)
    if tracking_uri:
        record = replace(record, tracking_uri=tracking.normalize_tracking_uri(tracking_uri))
    tracking.check_reachable(record.tracking_uri, CONNECT_TIMEOUT_S, must_exist=True)
    client = tracking.client(record.tracking_uri)
    exp = client.get_experiment_by_name(record.experiment)
    if exp is None:
        raise PhiscaleError(f"sweep {record.id}'s experiment {record.experiment!r} is not at {record.tracking_uri}: "
                            "pass --tracking-uri of the store its runs went to")
    now_ms = int(time.time() * 1000)
    rows = []
    for status in sweep_status(record, now_s=now_ms / 1000):
        point = status.point
        if status.run is not None:
            row = row_from_run(status.run, client, now_ms)
        else:
            row = RunRow(run_id="", run_name=f"#{point.index} {' '.join(point.own)}".strip(), model="", family="",
                         phi=None, depth_mult=None, width_mult=None, resolution_mult=None, resolution=None,
                         params=None, macs=None, top1=None, images_per_s=None, device_hours=None, status="–",
                         seeds="" if point.seed is None else str(point.seed), **series_fields(point.tags))  # fmt: skip
        rows.append(replace(row, state=status.state, sweep=record.id, sweep_point=point.point))
    return record, exp.experiment_id, sort_and_mark(rows)


def row_from_run(run: Any, client: Any, now_ms: int) -> RunRow:
    """Map one mlflow Run (schema: docs/ARCHITECTURE.md) to a RunRow."""
    tags, info = run.data.tags, run.info
    # The resolution the MACs and top-1 were measured at (data at another base size than 224 px,
    # digits' 32, scale the model's own resolution tag), else the model's.
    resolution = _int(run.data.metrics.get("eval/resolution"))
    if resolution is None:
        resolution = _int(tags.get("resolution"))
    r = _float(tags.get("resolution_mult"))
    if r is None and resolution is not None:
        r = resolution / BASE_RESOLUTION
    macs = next((run.data.metrics[k] for k in MACS_KEYS if k in run.data.metrics), None)
    status = "LOST" if tracking.is_lost(info.status, tags, info.start_time, now_ms / 1000) else info.status
    end_ms = info.end_time if status != "RUNNING" and info.end_time else now_ms
    hours = None
    if info.start_time:
        world_size = _int(tags.get("world_size")) or 1
        hours = max(0, end_ms - info.start_time) / 3.6e6 * world_size
    name = info.run_name or tags.get("mlflow.runName") or info.run_id
    seed = tags.get("seed", run.data.params.get("seed", ""))
    return RunRow(
        run_id=info.run_id,
        run_name=name,
        model=tags.get("model") or name,
        family=tags.get("family") or tags.get("model") or "",
        phi=_float(tags.get("phi")),
        depth_mult=_float(tags.get("depth_mult")),
        width_mult=_float(tags.get("width_mult")),
        resolution_mult=r,
        resolution=resolution,
        params=run.data.metrics.get(PARAMS_KEY),
        macs=macs,
        top1=best_top1(run, client),
        images_per_s=last_images_per_s(run),
        device_hours=hours,
        status=status,
        seeds=seed,
        aug=aug_summary(run.data.params),
        sweep=tags.get(SWEEP_ID_TAG) or tags.get("sweep") or "",
        sweep_point=_int(tags.get("sweep_point")),
        **series_fields(tags),
    )


def series_fields(tags: dict[str, str]) -> dict[str, Any]:
    """A series run's RunRow fields from its tags (or its record point's)."""
    return {"series": tags.get(SERIES_TAG, ""), "series_level": _float(tags.get(LEVEL_TAG)),
            "series_macs_target": _float(tags.get(TARGET_TAG))}


def aug_summary(params: dict[str, str]) -> str:
    """The run's augmentation in a few words, from its `aug.*` params; "none" when all are off or absent."""
    parts = []
    for key, text in AUG_SETTINGS:
        value = str(params.get(key, "")).strip()
        if value.lower() in AUG_OFF or _float(value) == 0:
            continue
        detail = AUG_DETAILS.get(value) if key == "aug.policy" else None
        parts.append(detail(params) if detail else text.format(value))
    return ", ".join(parts) or NO_AUG


def group_seeds(rows: Iterable[RunRow]) -> list[RunRow]:
    """One row per sweep point: the runs of a point (its seeds) merged by `merge_runs`; others as they are."""
    groups: dict[tuple[str, int], list[RunRow]] = {}
    out = []
    for row in rows:
        if row.sweep and row.sweep_point is not None:
            groups.setdefault((row.sweep, row.sweep_point), []).append(row)
        else:
            out.append(row)
    return out + [merge_runs(group) if len(group) > 1 else group[0] for group in groups.values()]


# Which run's status a merged row shows: the most urgent one (a running seed makes the row running).
STATUS_ORDER = ("RUNNING", "LOST", "FAILED", "KILLED", "FINISHED")


def merge_runs(rows: Sequence[RunRow]) -> RunRow:
    """The seeds of one point as one row: means and sample standard deviations of top-1 and images/s."""
    base = next((r for r in rows if r.run_id), rows[0])
    top1 = [r.top1 for r in rows if r.top1 is not None]
    speed = [r.images_per_s for r in rows if r.images_per_s is not None]
    hours = [r.device_hours for r in rows if r.device_hours is not None]
    statuses = {r.status for r in rows}
    augs = Counter(r.aug for r in rows if r.run_id)
    states = Counter(r.state for r in rows if r.state)
    return replace(
        base,
        run_id=",".join(r.run_id for r in rows if r.run_id),
        top1=statistics.fmean(top1) if top1 else None,
        top1_std=statistics.stdev(top1) if len(top1) > 1 else None,
        images_per_s=statistics.fmean(speed) if speed else None,
        images_per_s_std=statistics.stdev(speed) if len(speed) > 1 else None,
        device_hours=sum(hours) if hours else None,
        status=next((s for s in STATUS_ORDER if s in statuses), base.status),
        seeds=",".join(sorted((r.seeds for r in rows if r.seeds), key=lambda v: (len(v), v))),
        runs=len(rows),
        aug=next(iter(augs)) if len(augs) == 1 else "mixed: " + "; ".join(augs) if augs else base.aug,
        state=(next(iter(states)) if len(states) == 1 else ", ".join(f"{n} {s}" for s, n in states.items()))
        if states else None,
    )


def pareto_flags(points: Sequence[tuple[float | None, float | None]]) -> list[bool]:
    """For (MACs, top-1) pairs: True where no other point has <= MACs and >= top-1, one strictly.

    Points missing either value are never on the front. O(n²), fine for sweeps of hundreds.
    """
    flags = []
    for i, (macs, top1) in enumerate(points):
        if macs is None or top1 is None:
            flags.append(False)
            continue
        dominated = any(
            j != i and m is not None and t is not None and m <= macs and t >= top1 and (m < macs or t > top1)
            for j, (m, t) in enumerate(points)
        )
        flags.append(not dominated)
    return flags


def sort_and_mark(rows: Iterable[RunRow]) -> list[RunRow]:
    """Sort by MACs (runs without MACs last), best top-1 first on ties; mark the Pareto front."""
    rows = sorted(
        rows,
        key=lambda r: (
            r.macs is None,
            r.macs or 0.0,
            -(r.top1 if r.top1 is not None else -math.inf),
            r.run_name,
        ),
    )
    for row, flag in zip(rows, pareto_flags([(r.macs, r.top1) for r in rows]), strict=True):
        row.pareto = flag
    return rows


# ---------------------------------------------------------------- small helpers -----
def _search_all(client, experiment_id: str):
    from mlflow.entities import ViewType

    token = None
    while True:
        page = client.search_runs(
            [experiment_id], run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None  # e.g. phi="None" for a preset
    return None if math.isnan(out) else out


def _int(value: Any) -> int | None:
    out = _float(value)
    return None if out is None else int(round(out))
