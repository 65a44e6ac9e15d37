"""The report of a two-stage study: the search table and picture, the scale curve, its fit, the epochs.

- search: one row per search run: α, β, γ, α·β²·γ² (the FLOPs factor per unit of φ, arXiv 1905.11946
  §3.3), MACs, best val top-1, and the rung it was pruned at (sweeps/pruning.py); the winner marked.
- scale: top-1 against MACs over the scale stage, each point labelled with its φ; for ImageNet runs
  the paper's B0–B7 beside it (Tan & Le 2019, Table 2: top-1 and FLOPs, which the paper counts as
  multiply-adds, so they sit on the same axis as our MACs).
- fit: least squares of top-1 against ln(MACs) over the scale stage (top-1 ≈ a + b·ln MACs): b is the
  top-1 gained per e-fold of compute; and the φ with the best top-1 per MAC.
- epochs: what the study trained against what its full grid would have (every run to max_epochs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from phiscale.sweeps.close import epochs_spent
from phiscale.sweeps.pruning import PRUNED_TAG
from phiscale.sweeps.status import best_top1

MACS_KEY = "model/macs_eval"
# Tan & Le 2019 (arXiv 1905.11946), Table 2: (model, ImageNet top-1, FLOPs = multiply-adds).
PAPER_B0_B7 = (("B0", 0.771, 0.39e9), ("B1", 0.791, 0.70e9), ("B2", 0.801, 1.0e9), ("B3", 0.816, 1.8e9),
               ("B4", 0.829, 4.2e9), ("B5", 0.836, 9.9e9), ("B6", 0.840, 19e9), ("B7", 0.843, 37e9))
SEARCH_PNG, SCALE_PNG, SEARCH_CSV = "study_search.png", "study_scale.png", "study_search.csv"


def _param(run: Any, key: str) -> float | None:
    try:
        return float(run.data.params[key])
    except (KeyError, TypeError, ValueError):
        return None


def search_rows(statuses: Sequence[Any], winner_index: int | None) -> list[dict[str, Any]]:
    """One row per search run (its latest attempt) with α, β, γ, their product, MACs, top-1, pruned at."""
    rows = []
    for s in statuses:
        if s.point.stage != "search":
            continue
        run = s.run
        a, b, g = (_param(run, f"model.{k}") if run else None for k in ("alpha", "beta", "gamma"))
        rows.append({"index": s.point.index, "alpha": a, "beta": b, "gamma": g,
                     "product": a * b**2 * g**2 if None not in (a, b, g) else None,
                     "macs": run.data.metrics.get(MACS_KEY) if run else None, "top1": best_top1(run) if run else None,
                     "pruned_at": run.data.tags.get(PRUNED_TAG) if run else None, "state": s.state,
                     "winner": s.point.index == winner_index})
    return rows


def scale_rows(statuses: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per scale run: φ, MACs, best top-1 (runs without both MACs and top-1 left out)."""
    rows = []
    for s in statuses:
        if s.point.stage != "scale" or s.run is None:
            continue
        macs, top1 = s.run.data.metrics.get(MACS_KEY), best_top1(s.run)
        if macs and top1 is not None:
            rows.append({"index": s.point.index, "phi": _param(s.run, "model.phi"), "macs": macs, "top1": top1})
    return sorted(rows, key=lambda r: r["macs"])


def fit_log_macs(rows: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """(slope b, intercept a) of top-1 ≈ a + b·ln(MACs) by least squares; None below two distinct MACs."""
    xs = [math.log(r["macs"]) for r in rows]
    ys = [r["top1"] for r in rows]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def best_per_mac(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The scale run with the highest top-1 per MAC."""
    return max(rows, key=lambda r: r["top1"] / r["macs"], default=None)


def study_markdown(record: Any, search: list[dict], scale: list[dict], epochs: dict[str, int],
                   plots: Sequence[Path]) -> str:
    """The study's section of report.md."""
    def num(v, spec):
        return "–" if v is None else format(v, spec)

    lines = [f"## Study {record.id}: search, then scale", ""]
    if record.winner:
        w = record.winner
        lines.append(f"Search winner: run {w['index']} ({' '.join(w['overrides'])}), {w['metric']} = {w['value']:.4f}; "
                     f"{w['how']}.")
    if record.stopped:
        lines.append(f"Study stopped: {record.stopped}")
    share = epochs["spent"] / max(1, epochs["full"])
    lines += [f"Epochs: {epochs['spent']} spent of the full grid's {epochs['full']} ({share:.0%}).", "",
              "| # | α | β | γ | α·β²·γ² | MACs | best top-1 | pruned at | state |",
              "|--:|--:|--:|--:|--:|--:|--:|--:|:--|"]
    for r in search:
        mark = " **(winner)**" if r["winner"] else ""
        lines.append(f"| {r['index']} | {num(r['alpha'], '.3g')} | {num(r['beta'], '.3g')} | {num(r['gamma'], '.3g')} | "
                     f"{num(r['product'], '.3f')} | {num(r['macs'], '.3g')} | {num(r['top1'], '.4f')} | "
                     f"{r['pruned_at'] or '–'} | {r['state']}{mark} |")
    lines += ["", "| φ | MACs | best top-1 |", "|--:|--:|--:|"]
    lines += [f"| {num(r['phi'], 'g')} | {r['macs']:.3g} | {r['top1']:.4f} |" for r in scale]
    fit = fit_log_macs(scale)
    if fit:
        lines += ["", f"Least squares over the scale stage: top-1 ≈ {fit[1]:.4f} + {fit[0]:.4f}·ln(MACs) "
                      f"(slope {fit[0]:.4f} per e-fold of MACs, {fit[0] * math.log(2):.4f} per doubling)."]
    best = best_per_mac(scale)
    if best:
        lines.append(f"Best top-1 per MAC: φ = {num(best['phi'], 'g')} ({best['top1']:.4f} at {best['macs']:.3g} MACs).")
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_study(record: Any, statuses: Sequence[Any], out_dir: Path) -> tuple[str, list[Path]]:
    """The study's Markdown section and its files (the search CSV, the two pictures)."""
    import csv

    winner = record.winner["index"] if record.winner else None
    search, scale = search_rows(statuses, winner), scale_rows(statuses)
    epochs = record.epochs or epochs_spent(statuses)
    imagenet = any(s.run is not None and s.run.data.params.get("data.name") == "imagenet" for s in statuses)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SEARCH_CSV
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(search[0]) if search else ["index"])
        writer.writeheader()
        writer.writerows(search)
    plots = _plots(search, scale, out_dir, imagenet)
    return study_markdown(record, search, scale, epochs, plots), [path, *plots]


def _plots(search: list[dict], scale: list[dict], out_dir: Path, imagenet: bool) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    written = []
    measured = [r for r in search if r["macs"] and r["top1"] is not None]
    if measured:
        fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
        for pruned, marker, label in ((False, "o", "trained to the end"), (True, "x", "pruned")):
            group = [r for r in measured if bool(r["pruned_at"]) == pruned]
            if group:
                ax.scatter([r["macs"] for r in group], [r["top1"] for r in group], marker=marker, label=label)
        for r in measured:
            ax.annotate(f"α{r['alpha']:g} β{r['beta']:g} γ{r['gamma']:g}" + (" ★" if r["winner"] else ""),
                        (r["macs"], r["top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="MACs", ylabel="best val top-1", title="search at φ = 1")
        ax.legend(fontsize=8)
        written.append(_save(fig, plt, out_dir / SEARCH_PNG))
    if scale:
        fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
        ax.plot([r["macs"] for r in scale], [r["top1"] for r in scale], "o-", label="this study (scale stage)")
        for r in scale:
            ax.annotate(f"φ={r['phi']:g}", (r["macs"], r["top1"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
        fit = fit_log_macs(scale)
        if fit:
            xs = [scale[0]["macs"], scale[-1]["macs"]]
            ax.plot(xs, [fit[1] + fit[0] * math.log(x) for x in xs], "--", color="0.4",
                    label=f"fit: slope {fit[0]:.3f} per ln MACs")
        if imagenet:
            ax.plot([m for _, _, m in PAPER_B0_B7], [t for _, t, _ in PAPER_B0_B7], "s:", color="0.5",
                    label="EfficientNet B0–B7 (Tan & Le 2019, Table 2)")
            for name, top1, macs in PAPER_B0_B7:
                ax.annotate(name, (macs, top1), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ax.set_xscale("log")
        ax.set(xlabel="MACs", ylabel="best val top-1", title="scale stage: top-1 against MACs")
        ax.legend(fontsize=8)
        written.append(_save(fig, plt, out_dir / SCALE_PNG))
    return written


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
