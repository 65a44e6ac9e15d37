"""phiscale-report: an experiment's (or one sweep's) runs from MLflow -> table, Pareto front and plots, logged back."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from phiscale.errors import user_errors_as_one_line
from phiscale.report.build import make_report
from phiscale.report.tables import augmentation_note, table_cells
from phiscale.tracking import DEFAULT_URI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phiscale-report",
        description=(
            "Read an experiment's runs (or with --sweep only one sweep's) from MLflow and write the scaling "
            "report: a table (model, φ, d, w, r, resolution, params, MACs, best val top-1, images/s, seeds, "
            "augmentation, device-hours, status or the sweep's state) sorted by MACs with the Pareto front of "
            "top-1 vs MACs marked, and PNG plots (top-1 vs MACs, top-1 vs images/s, measured MACs vs φ beside "
            "d·w²·r²). The seeds of a sweep point are one row (mean ± std, error bars). The files go to --out "
            'and are logged as the artifacts of a run named "report" in the same experiment.'
        ),
        epilog=(
            "examples:\n"
            "  phiscale-report --experiment phiscale\n"
            "  phiscale-report --sweep phi                      # the latest sweep named phi (or its id)\n"
            "  phiscale-report --experiment phi-sweep --tracking-uri http://login01:5000 --out reports/phi"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", help="the MLflow experiment name (tracking.experiment)")
    which.add_argument("--sweep", help="one sweep: its id, its name (the latest of that name) or its sweep.json")
    parser.add_argument("--root", default="outputs", help="with --sweep: paths.root it was submitted with")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_URI})",
    )
    parser.add_argument("--out", default=None, help="output folder (default: outputs/reports/<experiment or sweep id>)")
    parser.add_argument(
        "--no-log", action="store_true", help='write the files only; do not create the "report" run'
    )
    return parser


@user_errors_as_one_line
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="phiscale-report: %(message)s")
    # A server that stops answering mid-report should fail in seconds, not after MLflow's retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    report = make_report(
        args.experiment, sweep=args.sweep, root=args.root, tracking_uri=args.tracking_uri, out_dir=args.out,
        log_to_mlflow=not args.no_log,
    )
    running = sum(r.running for r in report.rows)
    where = f"sweep {report.sweep_id}" if report.sweep_id else repr(report.experiment)
    runs = sum(r.runs for r in report.rows)
    count = f"{len(report.rows)} runs" if runs == len(report.rows) else f"{len(report.rows)} rows ({runs} runs)"
    print(f"{count} in {where} ({running} running), sorted by MACs:")
    note = augmentation_note(report.rows)
    if note:
        print(note)
    for row in report.rows:
        cells = table_cells(row)
        seeds = f"  seeds {cells['seeds']}" if row.runs > 1 else ""
        print(f"  {'★' if row.pareto else ' '} {cells['run']:<28} MACs {cells['MACs']:>8}  "
              f"top-1 {cells['best val top-1']:>7}  {cells['status']}{seeds}")
    print(f"Pareto front: {', '.join(r.run_name for r in report.pareto) or 'none'}")
    print(f"wrote {', '.join(str(p) for p in report.files)}")
    if report.run_id:
        print(f"logged as run {report.run_id} ({report.tracking_uri}, experiment id {report.experiment_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
