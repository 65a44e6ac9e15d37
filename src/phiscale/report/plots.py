"""The report's figures: top-1 against MACs (with the Pareto front) and against throughput, and MACs
against φ beside d·w²·r²; rows over several seeds carry error bars."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phiscale.models.scaling import macs_ratio
from phiscale.report.rows import RunRow

PLOT_TOP1_VS_MACS = "top1_vs_macs.png"
PLOT_TOP1_VS_THROUGHPUT = "top1_vs_images_per_s.png"
PLOT_MACS_VS_PHI = "macs_vs_phi.png"
MACS_VS_PHI_CAPTION = (
    "Measured MACs (dots) beside d·w²·r² scaled to the φ=0 run (squares). They part at small resolutions: "
    "each stride-2 stage rounds its feature map up (⌈n/2⌉), so at 32 px the last stage is 1×1 but at "
    "34 px it is 2×2, four times its MACs for a 13% larger r²."
)



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
