"""The scaling report: an experiment's runs, or one sweep's, from MLflow -> a table, the Pareto front and plots.

Reads the run schema of docs/ARCHITECTURE.md (tags `model`, `phi`, `*_mult`, `world_size`, `seed`,
`sweep_point`; params `aug.*`; metrics `model/macs_eval`, `model/params`, `val/top1_best` or
`val/top1`, `perf/images_per_s`), writes report.md, report.csv and PNG plots to a folder, and logs
that folder as the artifacts of a run named "report" (tag `phiscale.report=true`) in the same
experiment; earlier report runs and sweeps' parent runs are skipped when reading. Runs still
RUNNING are reported with their latest metrics and marked; RUNNING runs whose heartbeat stopped
are reported as `lost`.

The runs of one sweep point that differ only in their seed (a sweep file's `seeds:`) are one row:
best val top-1 and images/s as mean ± standard deviation (sample, n-1), error bars in the plots,
the Pareto front on the means. `--sweep` reads only that sweep's runs (the children of its parent
run): one row per point, its latest attempt, with the sweep's state (pending … missing) per point.
"""

from __future__ import annotations

import csv
import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phiscale import tracking
from phiscale.errors import PhiscaleError
from phiscale.models.scaling import BASE_RESOLUTION, macs_ratio
from phiscale.sweep_record import PARENT_RUN_TAG, PARENT_TAG, SWEEP_ID_TAG

log = logging.getLogger(__name__)

REPORT_TAG = "phiscale.report"
REPORT_RUN_NAME = "report"
CONNECT_TIMEOUT_S = 10.0

TOP1_BEST, TOP1 = "val/top1_best", "val/top1"
MACS_KEYS = ("model/macs_eval", "model/macs_train")
PARAMS_KEY = "model/params"
IMAGES_PER_S = "perf/images_per_s"

MARKDOWN_NAME, CSV_NAME = "report.md", "report.csv"
PLOT_TOP1_VS_MACS = "top1_vs_macs.png"
PLOT_TOP1_VS_THROUGHPUT = "top1_vs_images_per_s.png"
PLOT_MACS_VS_PHI = "macs_vs_phi.png"
MACS_VS_PHI_CAPTION = (
    "Measured MACs (dots) beside d·w²·r² scaled to the φ=0 run (squares). They part at small resolutions: "
    "each stride-2 stage rounds its feature map up (⌈n/2⌉), so at 32 px the last stage is 1×1 but at "
    "34 px it is 2×2, four times its MACs for a 13% larger r²."
)

# The augmentation column (params `aug.*`, logged by training; an absent param means off): the main
# settings in this order, each shown only when on; RandAugment with its ops and magnitude.
AUG_SETTINGS = (("aug.policy", "{}"), ("aug.mixup", "mixup {}"), ("aug.cutmix", "cutmix {}"),
                ("aug.erasing", "erasing {}"))
AUG_DETAILS: dict[str, Callable[[dict[str, str]], str]] = {
    "randaugment": lambda p: f"randaugment n{p.get('aug.num_ops', '?')} m{p.get('aug.magnitude', '?')}",
}
AUG_OFF = frozenset({"", "none", "null", "false", "off"})
NO_AUG = "none"


# What the status cell adds: RUNNING runs show their latest metrics; LOST ones are RUNNING in MLflow
# but their heartbeat stopped (phiscale.tracking.sync.is_lost).
STATUS_NOTES = {"RUNNING": " ⏳ (latest metrics)", "LOST": " (no heartbeat: `phiscale-sync --reap`)"}


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

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"


@dataclass
class Report:
    """What `make_report` produced: the rows (sorted by MACs) and the files it wrote and logged."""

    experiment: str
    experiment_id: str
    tracking_uri: str
    rows: list[RunRow]
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None  # the "report" run that holds the files as artifacts
    sweep_id: str | None = None  # report --sweep: the sweep

    @property
    def pareto(self) -> list[RunRow]:
        return [r for r in self.rows if r.pareto]


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
    from phiscale.sweep_record import find_record
    from phiscale.sweep_status import sweep_status

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
                         seeds="" if point.seed is None else str(point.seed))  # fmt: skip
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
    )


def best_top1(run: Any, client: Any | None = None) -> float | None:
    """`val/top1_best`, else (older runs, given a client) the best value in `val/top1`'s history."""
    metrics = run.data.metrics
    if TOP1_BEST in metrics or TOP1 not in metrics:
        return metrics.get(TOP1_BEST)
    if client is None:
        return metrics[TOP1]
    history = client.get_metric_history(run.info.run_id, TOP1)
    return max((m.value for m in history if not math.isnan(m.value)), default=None)


def last_images_per_s(run: Any) -> float | None:
    """The last logged training throughput (`perf/images_per_s`)."""
    return run.data.metrics.get(IMAGES_PER_S)


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


# ---------------------------------------------------------------- writing -----
# CSV columns: RunRow's fields; top-1 and images/s are means over a point's seeds, named so.
CSV_NAMES = {"top1": "top1_mean", "images_per_s": "images_per_s_mean"}
CSV_COLUMNS = [CSV_NAMES.get(f.name, f.name) for f in fields(RunRow)]
# The human table: (header, cell). The status column reads "state" in a sweep's report.
COLUMNS: tuple[tuple[str, Callable[[RunRow], str]], ...] = (
    ("run", lambda r: r.run_name),
    ("model", lambda r: r.model or "–"),
    ("φ", lambda r: _fmt(r.phi, "{:g}")),
    ("d", lambda r: _fmt(r.depth_mult, "{:.3f}")),
    ("w", lambda r: _fmt(r.width_mult, "{:.3f}")),
    ("r", lambda r: _fmt(r.resolution_mult, "{:.3f}")),
    ("resolution", lambda r: _fmt(r.resolution, "{:d}")),
    ("params", lambda r: _si(r.params)),
    ("MACs", lambda r: _si(r.macs)),
    ("best val top-1", lambda r: _mean_std(r.top1, r.top1_std, "{:.4f}")),
    ("images/s", lambda r: _mean_std(r.images_per_s, r.images_per_s_std, "{:.1f}")),
    ("seeds", lambda r: r.seeds or "–"),
    ("aug", lambda r: r.aug),
    ("device-hours", lambda r: _fmt(r.device_hours, "{:.3f}")),
    ("status", lambda r: r.state if r.state else r.status.lower() + STATUS_NOTES.get(r.status, "")),
    ("Pareto", lambda r: "★" if r.pareto else ""),
)
TABLE_HEADER = [header for header, _ in COLUMNS]


def table_header(rows: Sequence[RunRow]) -> list[str]:
    """The column names; a sweep's report calls its status column "state" (pending … missing)."""
    sweep = any(r.state for r in rows)
    return [("state" if sweep and h == "status" else h) for h in TABLE_HEADER]


def table_cells(row: RunRow) -> dict[str, str]:
    """One row of the human table (Markdown), numbers rounded for reading, by column name."""
    return {header: cell(row) for header, cell in COLUMNS}


def write_csv(rows: Sequence[RunRow], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({CSV_NAMES.get(k, k): ("" if v is None else v) for k, v in asdict(row).items()})
    return path


def augmentation_note(rows: Sequence[RunRow]) -> str | None:
    """One line when the rows mix augmentation settings (accuracy is then not comparable across them)."""
    settings = Counter(r.aug for r in rows if r.run_id)
    if len(settings) < 2:
        return None
    parts = "; ".join(f"{aug} ({n} row{'s' * (n > 1)})" for aug, n in settings.most_common())
    return f"Augmentation differs between these runs: {parts}. Compare top-1 only within one setting (column aug)."


def write_markdown(
    rows: Sequence[RunRow], path: Path, *, title: str, tracking_uri: str, plots: Sequence[Path]
) -> Path:
    running = sum(r.running for r in rows)
    runs = sum(r.runs for r in rows if r.run_id)
    front = [r.run_name for r in rows if r.pareto]
    header = table_header(rows)
    grouped = any(r.runs > 1 for r in rows)
    lines = [
        f"# Scaling report: {title}",
        "",
        f"{len(rows)} rows ({runs} runs) from `{tracking_uri}` ({running} still running), generated "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Sorted by MACs; ★ marks the Pareto front "
        "of best val top-1 vs MACs (no other row has fewer or equal MACs and a higher or equal top-1). "
        "⏳ marks runs still in progress, shown with their latest metrics."
        + (" A point trained with several seeds is one row: mean ± sample standard deviation over its seeds, "
           "the front drawn on the means." if grouped else ""),
        "",
    ]
    note = augmentation_note(rows)
    if note:
        lines += [f"**{note}**", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(_align(h) for h in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(r).values()) + " |" for r in rows]
    lines += ["", f"Pareto front: {', '.join(front) or 'none (no row has both MACs and top-1)'}", ""]
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
        if plot.name == PLOT_MACS_VS_PHI:
            lines += [MACS_VS_PHI_CAPTION, ""]
    if not any(p.name == PLOT_MACS_VS_PHI for p in plots):
        lines += ["(No MACs-vs-φ plot: no run has both a `phi` tag and MACs.)", ""]
    lines += [
        "device-hours = wall time × world_size (summed over a row's runs); images/s = last `perf/images_per_s`; "
        "MACs = `model/macs_eval` (multiply-adds, the papers' FLOPs); aug = the `aug.*` params (none: no "
        "augmentation beyond the data pipeline's crop and flip).",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def write_plots(rows: Sequence[RunRow], out_dir: Path) -> list[Path]:
    """The three figures as PNGs; a figure with no data to show is left out. Rows over several seeds
    carry error bars (± one standard deviation)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    written = []
    colors = _family_colors(rows)
    label_all = len(rows) <= 40

    measured = [r for r in rows if r.macs and r.top1 is not None]
    if measured:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
        _scatter_by_family(ax, measured, lambda r: r.macs, colors, yerr=lambda r: r.top1_std)
        front = [r for r in measured if r.pareto]
        ax.plot([r.macs for r in front], [r.top1 for r in front], "-", color="0.25", lw=1.5,
                zorder=1, label="Pareto front" + (" (means)" if any(r.runs > 1 for r in front) else ""))  # fmt: skip
        _label_points(ax, measured if label_all else front, lambda r: r.macs)
        ax.set_xscale("log")
        ax.set_xlabel("MACs (multiply-adds, log scale)")
        ax.set_ylabel("best val top-1" + (" (mean ± std over seeds)" if _has_std(measured) else ""))
        ax.set_title("Accuracy vs cost (cf. EfficientNet Fig. 1)")
        _finish(ax, fig, out_dir / PLOT_TOP1_VS_MACS, written)

    timed = [r for r in rows if r.images_per_s and r.top1 is not None]
    if timed:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
        _scatter_by_family(ax, timed, lambda r: r.images_per_s, colors, yerr=lambda r: r.top1_std,
                           xerr=lambda r: r.images_per_s_std)
        _label_points(ax, timed if label_all else [r for r in timed if r.pareto], lambda r: r.images_per_s)
        speeds = [r.images_per_s for r in timed]
        if max(speeds) / min(speeds) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("training throughput (images/s, last logged)")
        ax.set_ylabel("best val top-1" + (" (mean ± std over seeds)" if _has_std(timed) else ""))
        ax.set_title("Accuracy vs throughput")
        _finish(ax, fig, out_dir / PLOT_TOP1_VS_THROUGHPUT, written)

    scaled = sorted((r for r in rows if r.phi is not None and r.macs), key=lambda r: r.phi)
    if scaled:
        fig, ax = plt.subplots(figsize=(8, 6.2), dpi=120)
        _scatter_by_family(ax, scaled, lambda r: r.phi, colors, y=lambda r: r.macs)
        anchor = next((r for r in scaled if r.phi == 0), scaled[0])
        formula = [(r.phi, anchor.macs * expected_macs_ratio(r, anchor)) for r in scaled
                   if expected_macs_ratio(r, anchor) is not None]
        if formula:
            ax.plot(*zip(*formula, strict=True), "s--", color="0.4", mfc="none", ms=8, zorder=2,
                    label=f"d·w²·r² × MACs of {anchor.run_name}")
        _label_points(ax, scaled if label_all else [], lambda r: r.phi, y=lambda r: r.macs)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("φ (compound coefficient)")
        ax.set_ylabel("MACs (log₂ scale)")
        ax.set_title("Cost vs φ: measured MACs and d·w²·r²")
        fig.text(0.01, 0.01, MACS_VS_PHI_CAPTION, fontsize=7, wrap=True, va="bottom")
        _finish(ax, fig, out_dir / PLOT_MACS_VS_PHI, written, bottom=0.07)
    return written


def expected_macs_ratio(row: RunRow, anchor: RunRow) -> float | None:
    """d·w²·r² of `row` over that of `anchor` (`phiscale.models.scaling.macs_ratio`); None without d, w, r."""
    factors = [(r.depth_mult, r.width_mult, r.resolution_mult) for r in (row, anchor)]
    if any(v is None for f in factors for v in f):
        return None
    return macs_ratio(*factors[0]) / macs_ratio(*factors[1])


def _has_std(rows: Sequence[RunRow]) -> bool:
    return any(r.top1_std is not None for r in rows)


def _family_colors(rows: Sequence[RunRow]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    families = sorted({r.family for r in rows})
    return {f: cmap(i % 10) for i, f in enumerate(families)}


def _scatter_by_family(ax, rows, x, colors, y=lambda r: r.top1, yerr=lambda r: None, xerr=lambda r: None) -> None:
    for family, color in colors.items():
        for running in (False, True):
            group = [r for r in rows if r.family == family and r.running == running]
            if not group:
                continue
            spread = [r for r in group if yerr(r) is not None or xerr(r) is not None]
            if spread:  # ± one standard deviation over the seeds of a point
                ax.errorbar([x(r) for r in spread], [y(r) for r in spread],
                            yerr=[yerr(r) or 0.0 for r in spread], xerr=[xerr(r) or 0.0 for r in spread],
                            fmt="none", ecolor=color, elinewidth=1.2, capsize=4, zorder=2)
            ax.scatter(
                [x(r) for r in group],
                [y(r) for r in group],
                s=60,
                zorder=3,
                marker="o",
                facecolors="white" if running else [color],
                edgecolors=[color],
                linewidths=2 if running else 0.8,
                label=(family or "unknown") + (" (running)" if running else ""),
            )


def _label_points(ax, rows, x, y=lambda r: r.top1) -> None:
    for r in rows:
        ax.annotate(r.run_name, (x(r), y(r)), textcoords="offset points", xytext=(5, 4), fontsize=7)


def _finish(ax, fig, path: Path, written: list[Path], bottom: float | None = None) -> None:
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout(rect=(0, bottom or 0, 1, 1))
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    written.append(path)


# ---------------------------------------------------------------- the whole report -----
def make_report(
    experiment: str | None = None,
    *,
    sweep: str | None = None,
    root: str | Path = "outputs",
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Read the runs (of `experiment`, or of `sweep` under `root`), group a point's seeds, write
    Markdown + CSV + PNGs to `out_dir`, and log them as a "report" run (a child of the sweep's parent)."""
    if (experiment is None) == (sweep is None):
        raise PhiscaleError("give one of --experiment NAME or --sweep SWEEP_ID|NAME")
    tags = {REPORT_TAG: "true"}
    record = None
    if sweep is not None:
        record, experiment_id, rows = read_sweep(sweep, root, tracking_uri)
        uri, experiment, title = record.tracking_uri, record.experiment, f"sweep {record.id}"
        tags |= {f"{REPORT_TAG}.sweep_id": record.id} | ({PARENT_RUN_TAG: record.parent_run_id}
                                                          if record.parent_run_id else {})
    else:
        uri = tracking.resolve_uri(tracking_uri)
        experiment_id, rows = read_runs(experiment, uri)
        title = experiment
    rows = sort_and_mark(group_seeds(rows))
    out = Path(out_dir) if out_dir else Path("outputs") / "reports" / (record.id if record else experiment)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(rows, out)
    files = [
        write_markdown(rows, out / MARKDOWN_NAME, title=title, tracking_uri=uri, plots=plots),
        write_csv(rows, out / CSV_NAME),
        *plots,
    ]
    report = Report(experiment, experiment_id, uri, rows, out, files, sweep_id=record.id if record else None)
    if log_to_mlflow:
        tags[f"{REPORT_TAG}.runs"] = str(sum(r.runs for r in rows if r.run_id))
        report.run_id = tracking.log_report_run(uri, experiment_id, files, run_name=REPORT_RUN_NAME, tags=tags)
    return report


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


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def _mean_std(mean: float | None, std: float | None, spec: str) -> str:
    """'0.9512 ± 0.0040' over several seeds, '0.9512' for one run."""
    return _fmt(mean, spec) + ("" if std is None else " ± " + spec.format(std))


def _si(value: float | None) -> str:
    """5_288_548 -> '5.29M', 1.8e9 -> '1.80G' (params and MACs at a glance)."""
    if value is None:
        return "–"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:g}"


def _align(header: str) -> str:
    """Markdown column alignment: names left, the Pareto star centred, numbers right."""
    if header in ("run", "model", "status", "state", "seeds", "aug"):
        return "---"
    return ":---:" if header == "Pareto" else "---:"
