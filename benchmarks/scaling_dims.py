"""The scaling-dimensions study, run here and written down: one dimension at a time against compound
scaling (EfficientNet, Tan & Le 2019, Figure 8) on the embedded Fashion-MNIST.

It submits the sweep file with `phiscale-sweep submit --local --max-parallel K` into a store of its own,
makes the sweep's report (`phiscale-report --sweep`), and writes to --out:

    study.json    {"command", "sweep_id", "runs": [{series, phi, seed, macs, params, top1, depth_mult,
                  width_mult, resolution, epochs, wall_s, command}, ...], "levels": {...}}
    table.md      the report's series section (top-1 per series at each level, the best marked)
    top1_vs_macs_by_series.png

and prints, per level, each series' mean top-1 and the lead of compound scaling over the best single
dimension with its standard error: the paper's claim, measured in this run.

    .venv/bin/python benchmarks/scaling_dims.py                      # the committed study (~45 min, 2 cores)
    .venv/bin/python benchmarks/scaling_dims.py --collect SWEEP_ID   # only re-read a finished sweep
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "sweeps" / "scaling_dims_fashion.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scaling_dims_fashion"
EXPERIMENT = "scaling_dims"
SINGLE = ("width", "depth", "resolution")


def submit(sweep_file: Path, root: Path, parallel: int, extra: list[str]) -> str:
    """Train the sweep here; returns its id."""
    store = [f"paths.root={root}", f"tracking.uri=sqlite:///{root}/mlflow.db", f"tracking.experiment={EXPERIMENT}"]
    command = [sys.executable, "-m", "phiscale.cli.sweep", "submit", str(sweep_file), *store, *extra, "--local",
               "--max-parallel", str(parallel)]
    print("$", shlex.join(command), flush=True)
    subprocess.run(command, check=True)
    records = sorted((root / "sweeps").glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(records[-1].read_text())["id"]


def collect(sweep_id: str, root: Path) -> tuple[list[dict], object]:
    """One entry per run of the sweep from MLflow (the report's reader), plus the record."""
    from mlflow.tracking import MlflowClient

    from phiscale.report.rows import read_sweep

    record, _, rows = read_sweep(sweep_id, root)
    client = MlflowClient(record.tracking_uri)
    runs = []
    for row in rows:
        if not row.run_id:
            continue
        run = client.get_run(row.run_id)
        index = int(run.data.tags["sweep_index"])
        runs.append({
            "series": row.series, "phi": row.series_level, "seed": int(row.seeds), "macs": row.macs,
            "params": row.params, "top1": row.top1, "depth_mult": row.depth_mult, "width_mult": row.width_mult,
            "resolution": row.resolution, "epochs": int(run.data.params["trainer.max_epochs"]),
            "wall_s": round((run.info.end_time - run.info.start_time) / 1000, 1),
            "status": run.info.status, "sweep_index": index,
            "command": shlex.join(["phiscale-train", f"sweep.file={repo_path(record.sweep_file)}",
                                   f"sweep.index={index}"]),
        })
    runs.sort(key=lambda r: r["sweep_index"])
    return runs, record


def repo_path(path: str) -> str:
    """A path relative to the checkout where it lies in it (what a reader reruns from)."""
    return str(Path(path).relative_to(ROOT)) if Path(path).is_relative_to(ROOT) else path


def level_summary(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """{level: {series: {mean, std, n, macs}}}: a shared base counts for every series it names."""
    out: dict[str, dict[str, dict]] = {}
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        for name in run["series"].split(","):
            groups.setdefault((f"{run['phi']:g}", name), []).append(run)
    for (level, name), group in sorted(groups.items()):
        top1 = [r["top1"] for r in group]
        out.setdefault(level, {})[name] = {
            "mean": statistics.fmean(top1), "std": statistics.stdev(top1) if len(top1) > 1 else None,
            "n": len(top1), "macs": statistics.fmean(r["macs"] for r in group)}
    return out


def print_summary(levels: dict[str, dict[str, dict]]) -> None:
    names = list(dict.fromkeys(n for by in levels.values() for n in by))
    print("\nbest val top-1, mean ± std over seeds (MACs):")
    print("φ    " + "".join(f"{n:>26}" for n in names))
    for level, by in levels.items():
        cells = [f"{by[n]['mean']:.4f}" + (f" ± {by[n]['std']:.4f}" if by[n]["std"] is not None else "")
                 + f" ({by[n]['macs'] / 1e6:.1f}M)" if n in by else "–" for n in names]
        print(f"{level:<5}" + "".join(f"{c:>26}" for c in cells))
    for level, by in levels.items():
        if "compound" not in by or not any(n in by for n in SINGLE) or level == "0":
            continue
        best = max((n for n in SINGLE if n in by), key=lambda n: by[n]["mean"])
        a, b = by["compound"], by[best]
        se = math.sqrt((a["std"] or 0) ** 2 / a["n"] + (b["std"] or 0) ** 2 / b["n"])
        print(f"φ={level}: compound − best single dimension ({best}) = {a['mean'] - b['mean']:+.4f} ± {se:.4f} "
              f"(standard error; ratio of top-1 {a['mean'] / b['mean']:.4f})")


def _earlier_wall_s(out: Path, sweep_id: str) -> float | None:
    """--collect keeps the wall time that the run which trained this sweep wrote down."""
    try:
        earlier = json.loads((out / "study.json").read_text())
    except (OSError, ValueError):
        return None
    return earlier.get("wall_s") if earlier.get("sweep_id") == sweep_id else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE, help="the sweep file (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "scaling_dims",
                        help="paths.root of the runs and their sqlite store (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the results go (default: %(default)s)")
    parser.add_argument("--max-parallel", type=int, default=2, help="runs at once (default: %(default)s)")
    parser.add_argument("--collect", metavar="SWEEP_ID", help="skip training: read this finished sweep")
    parser.add_argument("extra", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()

    started = time.monotonic()
    sweep_id = args.collect or submit(args.file.resolve(), args.root.resolve(), args.max_parallel, args.extra)
    runs, record = collect(sweep_id, args.root.resolve())
    from phiscale.report.build import make_report
    from phiscale.report.series import PLOT_SERIES

    report_dir = args.root.resolve() / "reports" / sweep_id
    make_report(sweep=sweep_id, root=args.root.resolve(), out_dir=report_dir, log_to_mlflow=False)
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = (report_dir / "report.md").read_text()
    (args.out / "table.md").write_text("## Scaling series" + markdown.split("## Scaling series", 1)[1])
    shutil.copy(report_dir / PLOT_SERIES, args.out / PLOT_SERIES)
    levels = level_summary(runs)
    study = {"command": shlex.join(["python", "benchmarks/scaling_dims.py", *args.extra]),
             "submit_command": record.submit_command, "sweep_file": repo_path(record.sweep_file),
             "sweep_id": sweep_id, "max_parallel": args.max_parallel,
             "wall_s": round(time.monotonic() - started, 1) if not args.collect else _earlier_wall_s(args.out, sweep_id),
             "series": list(dict.fromkeys(n for r in runs for n in r["series"].split(","))),
             "phis": sorted({r["phi"] for r in runs}), "seeds": sorted({r["seed"] for r in runs}),
             "runs": runs, "levels": levels}
    (args.out / "study.json").write_text(json.dumps(study, indent=2) + "\n")
    print_summary(levels)
    print(f"\n{len(runs)} runs; wrote {args.out}/study.json, table.md, {PLOT_SERIES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
