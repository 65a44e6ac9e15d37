"""The scaling report: one experiment's runs from MLflow -> a table, the Pareto front and plots.

Reads the run schema of docs/ARCHITECTURE.md (tags `model`, `phi`, `*_mult`, `world_size`;
metrics `model/macs_eval`, `model/params`, `val/top1_best` or `val/top1`, `perf/images_per_s`),
writes report.md, report.csv and PNG plots to a folder, and logs that folder as the artifacts of
a run named "report" (tag `phiscale.report=true`) in the same experiment; earlier report runs
are skipped when reading. Runs still RUNNING are reported with their latest metrics and marked;
RUNNING runs whose heartbeat stopped are reported as `lost`.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phiscale import tracking
from phiscale.errors import PhiscaleError
from phiscale.models.scaling import BASE_RESOLUTION

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

    @property
    def pareto(self) -> list[RunRow]:
        return [r for r in self.rows if r.pareto]


# ---------------------------------------------------------------- reading runs -----
def read_runs(experiment: str, tracking_uri: str | None = None) -> tuple[str, list[RunRow]]:
    """(experiment id, rows sorted by MACs with the Pareto front marked); report runs skipped."""
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
    rows = []
    for run in _search_all(client, exp.experiment_id):
        if run.data.tags.get(REPORT_TAG) == "true":
            continue
        rows.append(row_from_run(run, client, now_ms))
    if not rows:
        raise PhiscaleError(
            f"experiment {experiment!r} at {uri} has no training runs yet: train some first "
            "(e.g. `phiscale-sweep sweeps/phi.yaml` prints the commands)"
        )
    log.info("read %d runs from experiment %r at %s", len(rows), experiment, uri)
    return exp.experiment_id, sort_and_mark(rows)


def row_from_run(run: Any, client: Any, now_ms: int) -> RunRow:
    """Map one mlflow Run (schema: docs/ARCHITECTURE.md) to a RunRow."""
    tags, metrics, info = run.data.tags, run.data.metrics, run.info
    top1 = metrics.get(TOP1_BEST)
    if top1 is None and TOP1 in metrics:
        history = client.get_metric_history(info.run_id, TOP1)
        top1 = max((m.value for m in history if not math.isnan(m.value)), default=None)
    resolution = _int(tags.get("resolution"))
    if resolution is None:
        resolution = _int(metrics.get("eval/resolution"))
    r = _float(tags.get("resolution_mult"))
    if r is None and resolution is not None:
        r = resolution / BASE_RESOLUTION
    macs = next((metrics[k] for k in MACS_KEYS if k in metrics), None)
    status = "LOST" if tracking.is_lost(info.status, tags, info.start_time, now_ms / 1000) else info.status
    end_ms = info.end_time if status != "RUNNING" and info.end_time else now_ms
    hours = None
    if info.start_time:
        world_size = _int(tags.get("world_size")) or 1
        hours = max(0, end_ms - info.start_time) / 3.6e6 * world_size
    name = info.run_name or tags.get("mlflow.runName") or info.run_id
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
        params=metrics.get(PARAMS_KEY),
        macs=macs,
        top1=top1,
        images_per_s=metrics.get(IMAGES_PER_S),
        device_hours=hours,
        status=status,
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
CSV_COLUMNS = [f.name for f in fields(RunRow)]
TABLE_HEADER = [
    "run", "model", "φ", "d", "w", "r", "resolution", "params", "MACs",
    "best val top-1", "images/s", "device-hours", "status", "Pareto",
]  # fmt: skip


def write_csv(rows: Sequence[RunRow], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(row).items()})
    return path


def table_cells(row: RunRow) -> list[str]:
    """One row of the human table (Markdown), numbers rounded for reading."""
    status = row.status.lower() + STATUS_NOTES.get(row.status, "")
    return [
        row.run_name,
        row.model,
        _fmt(row.phi, "{:g}"),
        _fmt(row.depth_mult, "{:.3f}"),
        _fmt(row.width_mult, "{:.3f}"),
        _fmt(row.resolution_mult, "{:.3f}"),
        _fmt(row.resolution, "{:d}"),
        _si(row.params),
        _si(row.macs),
        _fmt(row.top1, "{:.4f}"),
        _fmt(row.images_per_s, "{:.1f}"),
        _fmt(row.device_hours, "{:.3f}"),
        status,
        "★" if row.pareto else "",
    ]


def write_markdown(
    rows: Sequence[RunRow], path: Path, *, experiment: str, tracking_uri: str, plots: Sequence[Path]
) -> Path:
    running = sum(r.running for r in rows)
    front = [r.run_name for r in rows if r.pareto]
    lines = [
        f"# Scaling report: {experiment}",
        "",
        f"{len(rows)} runs from `{tracking_uri}` ({running} still running), generated "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Sorted by MACs; ★ marks the Pareto front "
        "of best val top-1 vs MACs (no other run has fewer or equal MACs and a higher or equal top-1). "
        "⏳ marks runs still in progress, shown with their latest metrics.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join(_align(h) for h in TABLE_HEADER) + "|",
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in table_cells(r)) + " |" for r in rows]
    lines += ["", f"Pareto front: {', '.join(front) or 'none (no run has both MACs and top-1)'}", ""]
    for plot in plots:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    if not any(p.name == PLOT_MACS_VS_PHI for p in plots):
        lines += ["(No MACs-vs-φ plot: no run has both a `phi` tag and MACs.)", ""]
    lines += [
        "device-hours = wall time × world_size; images/s = last `perf/images_per_s`; "
        "MACs = `model/macs_eval` (multiply-adds, the papers' FLOPs).",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def write_plots(rows: Sequence[RunRow], out_dir: Path) -> list[Path]:
    """The three figures as PNGs; a figure with no data to show is left out."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    written = []
    colors = _family_colors(rows)
    label_all = len(rows) <= 40

    measured = [r for r in rows if r.macs and r.top1 is not None]
    if measured:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
        _scatter_by_family(ax, measured, lambda r: r.macs, colors)
        front = [r for r in measured if r.pareto]
        ax.plot([r.macs for r in front], [r.top1 for r in front], "-", color="0.25", lw=1.5,
                zorder=1, label="Pareto front")  # fmt: skip
        _label_points(ax, measured if label_all else front, lambda r: r.macs)
        ax.set_xscale("log")
        ax.set_xlabel("MACs (multiply-adds, log scale)")
        ax.set_ylabel("best val top-1")
        ax.set_title("Accuracy vs cost (cf. EfficientNet Fig. 1)")
        _finish(ax, fig, out_dir / PLOT_TOP1_VS_MACS, written)

    timed = [r for r in rows if r.images_per_s and r.top1 is not None]
    if timed:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
        _scatter_by_family(ax, timed, lambda r: r.images_per_s, colors)
        _label_points(ax, timed if label_all else [r for r in timed if r.pareto], lambda r: r.images_per_s)
        speeds = [r.images_per_s for r in timed]
        if max(speeds) / min(speeds) > 20:
            ax.set_xscale("log")
        ax.set_xlabel("training throughput (images/s, last logged)")
        ax.set_ylabel("best val top-1")
        ax.set_title("Accuracy vs throughput")
        _finish(ax, fig, out_dir / PLOT_TOP1_VS_THROUGHPUT, written)

    scaled = sorted((r for r in rows if r.phi is not None and r.macs), key=lambda r: r.phi)
    if scaled:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
        _scatter_by_family(ax, scaled, lambda r: r.phi, colors, y=lambda r: r.macs)
        anchor = next((r for r in scaled if r.phi == 0), scaled[0])
        lo, hi = scaled[0].phi, scaled[-1].phi
        steps = [lo + (hi - lo) * i / 100 for i in range(101)] if hi > lo else [lo - 0.5, lo + 0.5]
        ax.plot(steps, [anchor.macs * 2 ** (p - anchor.phi) for p in steps], "--", color="0.4",
                zorder=1, label=f"2^φ from {anchor.run_name}")  # fmt: skip
        _label_points(ax, scaled if label_all else [], lambda r: r.phi, y=lambda r: r.macs)
        ax.set_yscale("log", base=2)
        ax.set_xlabel("φ (compound coefficient)")
        ax.set_ylabel("MACs (log₂ scale)")
        ax.set_title("Cost vs φ: MACs should double per unit φ")
        _finish(ax, fig, out_dir / PLOT_MACS_VS_PHI, written)
    return written


def _family_colors(rows: Sequence[RunRow]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    families = sorted({r.family for r in rows})
    return {f: cmap(i % 10) for i, f in enumerate(families)}


def _scatter_by_family(ax, rows, x, colors, y=lambda r: r.top1) -> None:
    for family, color in colors.items():
        for running in (False, True):
            group = [r for r in rows if r.family == family and r.running == running]
            if not group:
                continue
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


def _finish(ax, fig, path: Path, written: list[Path]) -> None:
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    written.append(path)


# ---------------------------------------------------------------- the whole report -----
def make_report(
    experiment: str,
    *,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Read the runs, write Markdown + CSV + PNGs to `out_dir`, log them as a "report" run."""
    uri = tracking.resolve_uri(tracking_uri)
    experiment_id, rows = read_runs(experiment, uri)
    out = Path(out_dir) if out_dir else Path("outputs") / "reports" / experiment
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(rows, out)
    files = [
        write_markdown(rows, out / MARKDOWN_NAME, experiment=experiment, tracking_uri=uri, plots=plots),
        write_csv(rows, out / CSV_NAME),
        *plots,
    ]
    report = Report(experiment, experiment_id, uri, rows, out, files)
    if log_to_mlflow:
        report.run_id = tracking.log_report_run(uri, experiment_id, files, run_name=REPORT_RUN_NAME,
                                                tags={REPORT_TAG: "true", f"{REPORT_TAG}.runs": str(len(rows))})
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
    if header in ("run", "model", "status"):
        return "---"
    return ":---:" if header == "Pareto" else "---:"
