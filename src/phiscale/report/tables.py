"""The report's table: the human one (Markdown, numbers rounded for reading) and the CSV (every field)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from phiscale.report.plots import MACS_VS_PHI_CAPTION, PLOT_MACS_VS_PHI
from phiscale.report.rows import RunRow

MARKDOWN_NAME, CSV_NAME = "report.md", "report.csv"

# What the status cell adds: RUNNING runs show their latest metrics; LOST ones are RUNNING in MLflow
# but their heartbeat stopped (phiscale.tracking.sync.is_lost).
STATUS_NOTES = {"RUNNING": " ⏳ (latest metrics)", "LOST": " (no heartbeat: `phiscale-sync --reap`)"}


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
