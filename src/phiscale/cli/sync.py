"""`phiscale-sync`: send run journals to MLflow later, and mark runs that died silently as KILLED."""

from __future__ import annotations

import argparse

from phiscale.errors import PhiscaleError, user_errors_as_one_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="phiscale-sync",
        description=(
            "Send what training journaled but MLflow does not have yet: an offline run "
            "(tracking.mode=offline), or a run that ended while the tracking store was down. Each run's "
            "journal lives in <output_dir>/tracking/; sending twice stores nothing twice."
        ),
        epilog=(
            "examples:\n"
            "  phiscale-sync outputs/runs/phiscale/efficientnet-phi1            # one run\n"
            "  phiscale-sync --all outputs/slurm                                 # every run under a dir\n"
            "  phiscale-sync --reap phiscale --tracking-uri http://login01:5000  # KILLED for lost runs"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output_dirs", nargs="*", metavar="OUTPUT_DIR", help="a run's output dir (paths.output_dir)")
    parser.add_argument("--all", metavar="ROOT", help="every run output dir under ROOT")
    parser.add_argument("--reap", metavar="EXPERIMENT",
                        help="mark RUNNING runs of EXPERIMENT whose heartbeat stopped (5 beats) as KILLED, "
                             "unless their output dir shows they resumed")
    parser.add_argument("--tracking-uri", help="the store (default: each run's own; for --reap: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="give up on a run after S seconds of a store that stays unreachable (default: keep trying)")
    args = parser.parse_args(argv)
    if not (args.output_dirs or args.all or args.reap):
        parser.error("give OUTPUT_DIR(s), --all ROOT or --reap EXPERIMENT")
    return args


@user_errors_as_one_line
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from phiscale import tracking
    from phiscale.tracking.sync import describe

    dirs = list(args.output_dirs) + (list(tracking.find_output_dirs(args.all)) if args.all else [])
    if args.all and not dirs:
        raise PhiscaleError(f"no run journals (*/tracking/journal.jsonl) under {args.all}")
    unsent = 0
    for output_dir in dirs:
        result = tracking.sync_output_dir(output_dir, tracking_uri=args.tracking_uri, timeout_s=args.timeout)
        print(describe(result), flush=True)
        unsent += result.left
    if args.reap:
        for reaped in tracking.reap(args.reap, tracking.resolve_uri(args.tracking_uri)):
            verb = ("marked KILLED" if reaped.action == "killed"
                    else "left alone (its output dir shows it resumed, or is still journaling)")
            print(f"{reaped.run_name} ({reaped.run_id}): silent for {reaped.silent_s:.0f} s, {verb}")
    if unsent:
        raise SystemExit(f"phiscale-sync: {unsent} entries still unsent; run it again when the store is back")


if __name__ == "__main__":
    main()
