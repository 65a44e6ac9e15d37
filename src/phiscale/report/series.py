"""The scaling series of a sweep (sweeps/series.py) in the report: top-1 against measured MACs with
one curve per series, a table of top-1 per series at each level with the best marked, and where a
point's measured MACs leave its level's target, the rounding named.

This is the comparison of the EfficientNet paper's Figures 3, 4 and 8 (Tan & Le 2019,
arXiv:1905.11946): at equal FLOPs, does one dimension or the compound formula buy more accuracy?
A level's winner is only a finding when its margin over the runner-up exceeds the noise of the
seeds, so the table gives the margin with its standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from phiscale.report.rows import RunRow

PLOT_SERIES = "top1_vs_macs_by_series.png"
# How far a point's measured MACs may sit from its level's target before the report names the
# rounding (the test of issue 30 holds each reduced-study point to it).
MACS_TOLERANCE = 0.15


@dataclass(frozen=True)
class SeriesPoint:
    """One row (a point, its seeds merged) as a member of one series."""

    series: str
    level: float
    row: RunRow
    macs_ratio: float | None  # measured MACs over the series' lowest level's
    target: float | None  # what the formula asks of the level over that base, (α·β²·γ²)^φ

    @property
    def off(self) -> float | None:
        """Measured over target, minus one (0.12 = 12% more MACs than the formula)."""
        if self.macs_ratio is None or not self.target:
            return None
        return self.macs_ratio / self.target - 1.0


def series_points(rows: Sequence[RunRow]) -> dict[str, list[SeriesPoint]]:
    """{series: its points by level}; a shared base row belongs to every series it names."""
    members: dict[str, list[RunRow]] = {}
    for row in rows:
        for name in filter(None, row.series.split(",")):
            if row.series_level is not None:
                members.setdefault(name, []).append(row)
    out = {}
    for name, group in members.items():
        group.sort(key=lambda r: r.series_level)
        base = group[0]
        out[name] = [SeriesPoint(name, r.series_level, r,
                                 r.macs / base.macs if r.macs and base.macs else None,
                                 (r.series_macs_target or 1.0) / (base.series_macs_target or 1.0))
                     for r in group]
    return out


def level_winners(points: dict[str, list[SeriesPoint]]) -> dict[float, tuple[str, float, float | None] | None]:
    """{level: (best series, its margin over the runner-up in top-1, the margin's standard error)};
    None where fewer than two distinct rows were measured (the shared base)."""
    out: dict[float, tuple[str, float, float | None] | None] = {}
    for level in sorted({p.level for ps in points.values() for p in ps}):
        at = {name: p for name, ps in points.items() for p in ps if p.level == level and p.row.top1 is not None}
        distinct = {id(p.row): p for p in at.values()}
        if len(distinct) < 2:
            out[level] = None
            continue
        ranked = sorted(at.items(), key=lambda item: -item[1].row.top1)
        (best, first), (_, second) = ranked[0], next(item for item in ranked[1:] if item[1].row is not ranked[0][1].row)
        out[level] = (best, first.row.top1 - second.row.top1, _margin_se(first.row, second.row))
    return out


def rounding_notes(points: dict[str, list[SeriesPoint]]) -> list[str]:
    """A line for every point whose measured MACs are more than MACS_TOLERANCE from its level's target."""
    notes = []
    for name, ps in points.items():
        for p in ps:
            if p.off is not None and abs(p.off) > MACS_TOLERANCE:
                notes.append(f"{name} φ={p.level:g}: measured ×{p.macs_ratio:.2f} of the series' base, the formula's "
                             f"×{p.target:.2f} ({p.off:+.0%}): channels round to multiples of 8, blocks up to whole "
                             "blocks and each stride-2 stage's map up (⌈n/2⌉); the plot places it by its measured MACs")
    return notes


def series_markdown(points: dict[str, list[SeriesPoint]], plot: Path | None) -> str:
    """The report's section: the table per level, the winners with their margins, the rounding notes."""
    names = list(points)
    levels = sorted({p.level for ps in points.values() for p in ps})
    winners = level_winners(points)
    cell = {(p.series, p.level): p for ps in points.values() for p in ps}
    lines = ["## Scaling series: one dimension at a time against compound scaling", "",
             "Best val top-1 (mean ± sample std over the seeds) of each series at each level φ, where every "
             "series asks for about 2^φ times its base's MACs (measured ratio in brackets); **bold** is the "
             "level's best. *margin* is the best series' lead over the next distinct point, ± its standard "
             "error (√(s₁²/n₁ + s₂²/n₂)): a lead inside about two standard errors is not a finding. "
             "Cf. EfficientNet (Tan & Le 2019) Figures 3, 4 and 8.", "",
             "| φ | " + " | ".join(names) + " | best | margin |", "|---:|" + "---:|" * len(names) + "---|---:|"]
    for level in levels:
        win = winners.get(level)
        row = [f"{level:g}"]
        for name in names:
            p = cell.get((name, level))
            if p is None or p.row.top1 is None:
                row.append("–")
                continue
            text = _mean_std(p.row) + (f" (×{p.macs_ratio:.2f})" if p.macs_ratio is not None else "")
            row.append(f"**{text}**" if win and win[0] == name and win[1] > 0 else text)
        if win is None:
            row += ["shared", "–"]
        else:
            row += [win[0] if win[1] > 0 else "tie", f"{win[1]:+.4f}" + (f" ± {win[2]:.4f}" if win[2] is not None else "")]
        lines.append("| " + " | ".join(row) + " |")
    notes = rounding_notes(points)
    lines += ["", "MACs against the level's target: " + ("every point within "
              f"{MACS_TOLERANCE:.0%} of (α·β²·γ²)^φ times its series' base." if not notes else "")]
    lines += [f"- {note}" for note in notes]
    if plot is not None:
        lines += ["", f"![{plot.stem}]({plot.name})"]
    return "\n".join(lines) + "\n"


def write_series(rows: Sequence[RunRow], out_dir: Path) -> tuple[str, list[Path]] | None:
    """The series section and its plot, or None when no row belongs to a series."""
    points = series_points(rows)
    if not points:
        return None
    plot = _plot(points, out_dir / PLOT_SERIES)
    return series_markdown(points, plot), [plot] if plot else []


def _plot(points: dict[str, list[SeriesPoint]], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    drawn = {name: [p for p in ps if p.row.macs and p.row.top1 is not None] for name, ps in points.items()}
    drawn = {name: ps for name, ps in drawn.items() if ps}
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    cmap = matplotlib.colormaps["tab10"]
    for i, (name, ps) in enumerate(drawn.items()):
        x, y = [p.row.macs for p in ps], [p.row.top1 for p in ps]
        err = [p.row.top1_std or 0.0 for p in ps]
        ax.errorbar(x, y, yerr=err, fmt="o-", color=cmap(i % 10), capsize=4, lw=1.6, ms=6, label=name)
        for p in ps:
            ax.annotate(f"φ={p.level:g}", (p.row.macs, p.row.top1), textcoords="offset points", xytext=(5, -10),
                        fontsize=7, color=cmap(i % 10))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("MACs per image (measured, log₂ scale)")
    ax.set_ylabel("best val top-1 (mean ± std over seeds)")
    ax.set_title("Scaling one dimension vs compound scaling (cf. EfficientNet Fig. 8)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _mean_std(row: RunRow) -> str:
    return f"{row.top1:.4f}" + (f" ± {row.top1_std:.4f}" if row.top1_std is not None else "")


def _margin_se(a: RunRow, b: RunRow) -> float | None:
    """The standard error of the difference of two rows' mean top-1; None unless both have seeds' spread."""
    if a.top1_std is None or b.top1_std is None:
        return None
    return math.sqrt(a.top1_std**2 / a.runs + b.top1_std**2 / b.runs)
