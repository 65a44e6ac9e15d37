"""phiscale-sweep: list a sweep file's points; submit a sweep (SLURM array or here), follow it, resume it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from phiscale.errors import PhiscaleError, user_errors_as_one_line
from phiscale.sweeps.file import load_sweep
from phiscale.sweeps.listing import describe, format_table

COMMANDS = ("list", "submit", "status", "resume")
DEFAULT_ROOT = "outputs"  # conf/train.yaml's paths.root
STAGE_LESS = ("submit (recorded):", "SLURM array:", "Hydra multirun:")  # listing lines that train one file's points


DESCRIPTION = (
    "Sweeps as first-class objects. `list` shows a sweep file's runs (index and Hydra overrides; for "
    "scaled points d, w, r and the expected MACs ratio d·w²·r², ≈ 2^φ for the compound formula) and the "
    "commands that train them. `submit` records the sweep (an id, <root>/sweeps/<id>/sweep.json, a "
    "parent MLflow run) and queues it as one SLURM array, or trains it here with --local. `status` "
    "shows each run's state from MLflow and SLURM; `resume` resubmits the failed, cancelled, lost "
    "and missing runs into their own output dirs and MLflow runs."
)
EPILOG = (
    "examples:\n"
    "  phiscale-sweep sweeps/phi.yaml                                    # = list\n"
    "  phiscale-sweep list sweeps/abg_grid.yaml --format json\n"
    "  phiscale-sweep submit sweeps/phi.yaml trainer=gpu data=imagenet --max-parallel 4 \\\n"
    "      --sbatch-arg=--time=12:00:00 --sbatch-arg=--gpus-per-node=1\n"
    "  phiscale-sweep submit sweeps/phi.yaml trainer.max_epochs=2 --local\n"
    "  phiscale-sweep status phi                                          # the latest sweep named phi\n"
    "  phiscale-sweep resume phi-20261128-1a2b"
)
HELP = {
    "list": "the runs of a sweep file and the commands that train them",
    "submit": "record a sweep and queue it as one SLURM array (or train it here with --local)",
    "status": "each run's state (MLflow and SLURM), restarts, best val top-1 and images/s",
    "resume": "resubmit the failed, cancelled, lost and missing runs (one array, those indices)",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of one subcommand, or (None) the overview that `phiscale-sweep --help` prints."""
    if command is None:
        parser = argparse.ArgumentParser(prog="phiscale-sweep", description=DESCRIPTION, epilog=EPILOG,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        sub = parser.add_subparsers(dest="command", metavar="{list,submit,status,resume}")
        for name in COMMANDS:
            sub.add_parser(name, help=HELP[name])
        return parser
    parser = argparse.ArgumentParser(prog=f"phiscale-sweep {command}", description=HELP[command])
    if command in ("list", "submit"):
        parser.add_argument("file", help="the sweep file, e.g. sweeps/phi.yaml")
        parser.add_argument("extra", nargs="*", help="Hydra overrides for every run (after each run's own)")
    else:
        parser.add_argument("sweep", help="a sweep id, a sweep name (its latest submission) or a sweep.json path")
        parser.add_argument("--root", default=DEFAULT_ROOT,
                            help=f"paths.root the sweep was submitted with (default: {DEFAULT_ROOT})")
    if command in ("list", "status"):
        parser.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    if command == "list":
        _max_parallel(parser)
    if command in ("submit", "resume"):
        _launch_options(parser)
    if command == "submit":
        parser.add_argument("--register", metavar="NAME", default=None,
                            help="register every finished run's model as a version of NAME (alias best: the highest "
                                 "val/top1_best), i.e. tracking.register=NAME for every run")
    return parser


def _max_parallel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-parallel", type=int, default=None, metavar="K",
                        help="run at most K array tasks at once (sbatch --array=…%%K); with --local, K runs "
                             "at once here, each with its share of the CPUs (default 1)")


def _launch_options(parser: argparse.ArgumentParser) -> None:
    _max_parallel(parser)
    parser.add_argument("--local", action="store_true",
                        help="train the runs on this machine (no SLURM), one after another or --max-parallel K at once")
    parser.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                        help="an sbatch option, passed through (repeat; write --sbatch-arg=--time=60)")
    parser.add_argument("--script", default=None, help="the SLURM batch script (default: slurm/sweep.sbatch)")


def run_list(args: argparse.Namespace) -> int:
    from phiscale.sweeps.study import load_study

    check_max_parallel(args.max_parallel)
    study = load_study(args.file)
    if not study.two_stage:
        info = describe(load_sweep(args.file), args.extra, args.max_parallel)
        print(json.dumps(info, indent=2, ensure_ascii=False) if args.format == "json" else format_table(info))
        return 0
    infos = [{"stage": stage.name, "first_index": study.indices(stage)[0],
              **describe(stage.sweep, args.extra, args.max_parallel)} for stage in study.stages]
    if args.format == "json":
        print(json.dumps({"name": study.name, "stages": infos}, indent=2, ensure_ascii=False))
        return 0
    for info in infos:  # a stage's runs only; the commands below are the study's, not a stage's
        table = [line for line in format_table(info).splitlines() if not line.startswith(STAGE_LESS)]
        print(f"stage {info['stage']} (study runs from {info['first_index']}):\n" + "\n".join(table) + "\n")
    print(f"`phiscale-sweep submit {args.file}` queues both stages: the scale stage after the search, "
          "with the search winner's model.alpha, model.beta, model.gamma")
    return 0


# ---------------------------------------------------------------- submit -----
def run_submit(args: argparse.Namespace) -> int:
    from phiscale.sweeps.launch import new_sweep

    check_max_parallel(args.max_parallel)
    if args.local and args.sbatch_arg:
        raise PhiscaleError(f"--sbatch-arg {' '.join(args.sbatch_arg)} has no effect with --local; drop one of them")
    extra = list(args.extra)
    if args.register is not None:  # every point registers its model: models:/NAME@best is the sweep's winner
        from phiscale.tracking.registry import check_name

        extra.append(f"tracking.register={check_name(args.register)}")
    record = new_sweep(args.file, extra, submit_command=_command_line())
    print(f"sweep {record.id}: {len(record.points)} runs of {record.name}; record {record.path}")
    print(f"parent MLflow run {record.parent_run_id} in experiment {record.experiment!r} at {record.tracking_uri}")
    return _launch(record, [p.index for p in record.points], args)


def _launch(record, indices: list[int], args: argparse.Namespace) -> int:
    from phiscale.sweeps.launch import launch

    done = launch(record, indices, local=args.local, max_parallel=args.max_parallel, extra_args=args.sbatch_arg,
                  script=args.script)
    if done.submission is not None:
        for submission in done.submissions:
            print(f"queued SLURM array job {submission.array_job_id}: {submission.command}")
        print(f"queued the closer, job {done.closer}: the parent run's status follows the runs' end")
        print(f"follow it: phiscale-sweep status {record.id}")
        return 0
    summary = ", ".join(f"{n} {state}" for state, n in done.counts.items())
    print(f"sweep {record.id}: {summary}; parent run {done.parent}")
    if done.failed:
        print(f"failed runs: {','.join(map(str, done.failed))}; `phiscale-sweep resume {record.id} --local` retries them")
    return 1 if done.failed or len(done.codes) < len(indices) else 0


# ---------------------------------------------------------------- status -----
def run_status(args: argparse.Namespace) -> int:
    from phiscale.sweeps.record import find_record
    from phiscale.sweeps.status import format_status, status_rows, sweep_status, update_parent

    record = find_record(args.sweep, args.root)
    statuses = sweep_status(record)
    parent = update_parent(record, statuses)
    rows = status_rows(statuses)
    if args.format == "json":
        json.dump({"id": record.id, "name": record.name, "parent_status": parent, "runs": rows, "winner": record.winner,
                   "stopped": record.stopped, "epochs": record.epochs}, sys.stdout, indent=2)
        print()
    else:
        print(format_status(record, rows, parent))
    return 0


# ---------------------------------------------------------------- resume -----
def run_resume(args: argparse.Namespace) -> int:
    from phiscale.sweeps.launch import resume_indices
    from phiscale.sweeps.record import find_record, format_indices
    from phiscale.sweeps.status import ACTIVE, counts, sweep_status, update_parent

    check_max_parallel(args.max_parallel)
    record = find_record(args.sweep, args.root)
    statuses = sweep_status(record)
    todo = resume_indices(record, statuses)
    if not todo and record.stopped:
        print(f"sweep {record.id}: nothing to resume; the study stopped: {record.stopped}")
        return 1
    if not todo:
        parent = update_parent(record, statuses)
        active = [s for s in statuses if s.state in ACTIVE]
        if active:
            summary = ", ".join(f"{n} {state}" for state, n in counts(active).items())
            print(f"sweep {record.id}: nothing to resume ({summary}; the rest finished)")
        else:
            print(f"sweep {record.id} is complete: all {len(statuses)} runs finished; nothing to resume "
                  f"(parent run {parent})")
        return 0
    why = ", ".join(f"{s.point.index} {s.state}" for s in statuses if s.point.index in todo)
    print(f"sweep {record.id}: resuming runs {format_indices(todo)} ({why}) into their output dirs and MLflow runs")
    if not args.local and not any(s.launcher == "slurm" for s in record.submissions):
        args.local = True  # a sweep that never went to SLURM resumes where it ran
    if not args.local and record.parent_run_id:
        from phiscale.tracking.writes import set_run_status

        set_run_status(record.tracking_uri, record.parent_run_id, "RUNNING")  # runs outstanding again
    return _launch(record, todo, args)


# ---------------------------------------------------------------- helpers -----
def check_max_parallel(value: int | None) -> None:
    if value is not None and value < 1:
        raise PhiscaleError(f"--max-parallel {value} must be at least 1 (or left out for no limit)")


def _command_line() -> str:
    import shlex

    return shlex.join(["phiscale-sweep", *sys.argv[1:]]) if sys.argv[1:] else "phiscale-sweep"


HANDLERS = {"list": run_list, "submit": run_submit, "status": run_status, "resume": run_resume}


@user_errors_as_one_line
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0 if argv else 2
    command = argv.pop(0) if argv[0] in COMMANDS else "list"  # `phiscale-sweep FILE` lists, as it always did
    args = build_parser(command).parse_intermixed_args(argv)
    return HANDLERS[command](args)


if __name__ == "__main__":
    sys.exit(main())
