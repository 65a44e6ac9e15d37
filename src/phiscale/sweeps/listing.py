"""A sweep file's runs as data (what `phiscale-sweep list --format json` prints) and as a table."""

from __future__ import annotations

from collections.abc import Sequence

from phiscale.sweeps.file import Sweep
from phiscale.sweeps.series import LEVEL_TAG, series_names
from phiscale.sweeps.table import columns, num


def describe(sweep: Sweep, extra: Sequence[str] = (), max_parallel: int | None = None) -> dict:
    """The listing as plain data (what --format json prints): one entry per run (point × seed)."""
    points = []
    for i in range(len(sweep)):
        scale = sweep.scale(i)
        own_tags = sweep.own_tags(i)
        points.append(
            {
                "index": i,
                "overrides": sweep.overrides(i),
                "point": sweep.own_overrides(i),
                "sweep_point": sweep.point_of(i),
                "seed": sweep.seed_of(i),
                "phi": scale.phi,
                "d": scale.depth_mult,
                "w": scale.width_mult,
                "r": scale.resolution_mult,
                "macs_ratio": scale.macs_ratio,
                "series": series_names(own_tags),
                "level": float(own_tags[LEVEL_TAG]) if LEVEL_TAG in own_tags else None,
            }
        )
    return {
        "name": sweep.name,
        "file": str(sweep.path),
        "description": sweep.description,
        "base": sweep.base,
        "tags": sweep.tags,
        "size": len(sweep),
        "points": len(sweep.points),
        "seeds": sweep.seeds,
        "grid_size": sweep.grid_size or len(sweep.points),
        "series": list(dict.fromkeys(name for p in points for name in p["series"])),
        "runs": points,
        "submit": sweep.submit_command(extra, max_parallel=max_parallel),
        "sbatch": sweep.sbatch_command(extra, max_parallel=max_parallel),
        "multirun": sweep.multirun_command(extra),
    }


def format_table(info: dict) -> str:
    lines = [f"{info['name']}: {info['points']} points from {info['file']}"]
    if info["points"] != info["grid_size"]:
        lines[0] += f" ({info['grid_size']} in the grid, {info['points']} inside the constraint)"
    if info["seeds"]:
        lines[0] += f" × {len(info['seeds'])} seeds = {info['size']} runs (run i: point i // {len(info['seeds'])})"
    if info["description"]:
        lines.append(info["description"])
    lines.append(f"base (every run): {' '.join(info['base']) or '-'}")
    if info["series"]:
        levels = sorted({p["level"] for p in info["runs"] if p["level"] is not None})
        lines.append(f"series: {', '.join(info['series'])} at φ = {', '.join(f'{lv:g}' for lv in levels)} "
                     "(a shared base runs once for every series that starts from it)")
    if info["tags"]:
        lines.append("tags: " + " ".join(f"{k}={v}" for k, v in info["tags"].items()))
    lines.append("")

    has_scale = any(p["macs_ratio"] is not None for p in info["runs"])
    rows = []
    for p in info["runs"]:
        row = [str(p["index"])] + ([",".join(p["series"]) or "-"] if info["series"] else [])
        row += [" ".join(p["point"]) or "-"]
        if has_scale:
            row += [num(p["d"]), num(p["w"]), num(p["r"]), num(p["macs_ratio"])]
        rows.append(row)
    header = ["#", *(["series"] if info["series"] else []), "overrides"] + (["d", "w", "r", "MACs×"] if has_scale else [])
    lines += [*columns(header, rows, left=(1, 2) if info["series"] else (1,)), ""]
    if has_scale:
        lines.append(
            "MACs× = d·w²·r², the expected MACs over the unscaled model (≈ 2^φ for the compound formula)"
        )
    lines.append(f"submit (recorded):  {info['submit']}")
    lines.append(f"SLURM array:        {info['sbatch']}")
    lines.append(f"Hydra multirun:     {info['multirun']}")
    return "\n".join(lines)
