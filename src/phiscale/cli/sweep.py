"""phiscale-sweep: list a sweep file's points and print the SLURM array and Hydra multirun commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from phiscale.errors import PhiscaleError, user_errors_as_one_line
from phiscale.sweeps import Sweep, load_sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phiscale-sweep",
        description=(
            "List the points of a sweep file (index and Hydra overrides; for scaled points d, w, r "
            "and the expected MACs ratio d·w²·r², ≈ 2^φ for the compound formula) and print the "
            "commands that train them all: a SLURM array and a Hydra multirun."
        ),
        epilog=(
            "examples:\n"
            "  phiscale-sweep sweeps/phi.yaml\n"
            "  phiscale-sweep sweeps/abg_grid.yaml --format json\n"
            "  phiscale-sweep sweeps/phi.yaml -- trainer=gpu data=imagenet   # extra overrides for every point"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", help="the sweep file, e.g. sweeps/phi.yaml")
    parser.add_argument(
        "extra", nargs="*", help="Hydra overrides appended to every point in the printed commands"
    )
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default: table)"
    )
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        metavar="K",
        help="run at most K array tasks at once (sbatch %%K)",
    )
    return parser


def describe(sweep: Sweep, extra: Sequence[str] = (), max_parallel: int | None = None) -> dict:
    """The listing as plain data (what --format json prints)."""
    points = []
    for i in range(len(sweep)):
        scale = sweep.scale(i)
        points.append(
            {
                "index": i,
                "overrides": sweep.overrides(i),
                "point": sweep.points[i],
                "phi": scale.phi,
                "d": scale.depth_mult,
                "w": scale.width_mult,
                "r": scale.resolution_mult,
                "macs_ratio": scale.macs_ratio,
            }
        )
    return {
        "name": sweep.name,
        "file": str(sweep.path),
        "description": sweep.description,
        "base": sweep.base,
        "tags": sweep.tags,
        "size": len(sweep),
        "grid_size": sweep.grid_size or len(sweep),
        "points": points,
        "sbatch": sweep.sbatch_command(extra, max_parallel=max_parallel),
        "multirun": sweep.multirun_command(extra),
    }


def format_table(info: dict) -> str:
    lines = [f"{info['name']}: {info['size']} points from {info['file']}"]
    if info["size"] != info["grid_size"]:
        lines[0] += f" ({info['grid_size']} in the grid, {info['size']} inside the constraint)"
    if info["description"]:
        lines.append(info["description"])
    lines.append(f"base (every point): {' '.join(info['base']) or '-'}")
    if info["tags"]:
        lines.append("tags: " + " ".join(f"{k}={v}" for k, v in info["tags"].items()))
    lines.append("")

    has_scale = any(p["macs_ratio"] is not None for p in info["points"])
    rows = []
    for p in info["points"]:
        row = [str(p["index"]), " ".join(p["point"]) or "-"]
        if has_scale:
            row += [_num(p["d"]), _num(p["w"]), _num(p["r"]), _num(p["macs_ratio"])]
        rows.append(row)
    header = ["#", "overrides"] + (["d", "w", "r", "MACs×"] if has_scale else [])
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1])] + [
            c.rjust(w) for c, w in zip(row[2:], widths[2:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    lines += [fmt(header), *map(fmt, rows), ""]
    if has_scale:
        lines.append(
            "MACs× = d·w²·r², the expected MACs over the unscaled model (≈ 2^φ for the compound formula)"
        )
    lines.append(f"SLURM array:     {info['sbatch']}")
    lines.append(f"Hydra multirun:  {info['multirun']}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@user_errors_as_one_line
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    if args.max_parallel is not None and args.max_parallel < 1:
        raise PhiscaleError(
            f"--max-parallel {args.max_parallel} must be at least 1 (or left out for no limit)"
        )
    sweep = load_sweep(args.file)
    info = describe(sweep, args.extra, args.max_parallel)
    if args.format == "json":
        json.dump(info, sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print(format_table(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
