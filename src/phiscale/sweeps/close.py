"""The parent closes itself: when a sweep's last run has ended, its parent run's status follows.

`phiscale-sweep submit` and `resume` queue, beside the arrays, one small SLURM job with
`--dependency=afterany:<every array>`: SLURM starts it once every task has ended, however it ended
(finished, failed, cancelled, pruned, or killed by SIGKILL, OOM or a lost node: the controller, not
the dying process, knows the task ended), and it runs `python -m phiscale.sweeps.close <sweep.json>`,
which reads every run's state as `status` does, sets the parent's status, and records the epochs
spent against the full grid's. A run's own last words could not do this: a SIGKILLed run has none,
and while it runs SLURM still counts its own task as running. A `--local` launch does the same after
its last run. An `scancel` of the closer as well leaves the parent as it was until `status` or
`resume`.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from typing import Any

from phiscale.sweeps.pruning import PRUNED_TAG
from phiscale.sweeps.record import SweepRecord, load_record

CLOSER_LOG = "close-%j.out"  # in the record's dir
PASSED_ON = ("--partition", "-p", "--account", "-A", "--qos", "-q", "--reservation")  # from --sbatch-arg
EPOCHS_PARAM = "trainer.max_epochs"


def close_sweep(record: SweepRecord) -> tuple[str | None, dict[str, int]]:
    """Every run's state -> the parent's status (set now) and the epochs spent (saved in the record)."""
    from phiscale.sweeps.record import locked
    from phiscale.sweeps.status import sweep_status, update_parent

    statuses = sweep_status(record)
    parent = update_parent(record, statuses)
    epochs = epochs_spent(statuses)
    with locked(record) as fresh:
        fresh.epochs = epochs
        fresh.save()
    record.epochs = epochs
    return parent, epochs


def epochs_spent(statuses: Sequence[Any]) -> dict[str, int]:
    """{"spent": epochs the runs trained, "full": what every run trained to the end would have}: a pruned
    run counts its rung, a finished one its trainer.max_epochs, any other the epochs its metrics reached."""
    spent = full = 0
    known = [int(float(s.run.data.params[EPOCHS_PARAM])) for s in statuses
             if s.run is not None and EPOCHS_PARAM in s.run.data.params]
    default = max(known, default=0)
    for s in statuses:
        run = s.run
        epochs = int(float(run.data.params.get(EPOCHS_PARAM, default))) if run is not None else default
        full += epochs
        if run is None:
            continue
        if PRUNED_TAG in run.data.tags:
            spent += int(run.data.tags[PRUNED_TAG])
        elif s.state == "finished":
            spent += epochs
        else:
            spent += int(run.data.metrics.get("epoch", -1)) + 1
    return {"spent": spent, "full": full}


def closer_args(record: SweepRecord, after: Sequence[str], extra_args: Sequence[str] = ()) -> list[str]:
    """sbatch's arguments for the closer: after every job in `after`, a one-minute task in the record's dir."""
    passed = [a for a in extra_args if any(a == f or a.startswith(f + "=") for f in PASSED_ON)]
    command = shlex.join([sys.executable, "-m", "phiscale.sweeps.close", str(record.path)])
    return [f"--dependency=afterany:{':'.join(after)}", f"--job-name={record.id}-close", "--ntasks=1",
            "--time=10", f"--output={record.directory}/{CLOSER_LOG}", *passed, f"--wrap=exec {command}"]


def submit_closer(record: SweepRecord, after: Sequence[str], extra_args: Sequence[str] = ()) -> str:
    """Queue the closer behind `after`; returns its job id."""
    from phiscale.slurm import queue as slurm_queue

    return slurm_queue.submit(closer_args(record, after, extra_args))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m phiscale.sweeps.close <sweep.json>`: what the closer job runs."""
    from phiscale.errors import PhiscaleError

    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m phiscale.sweeps.close <root>/sweeps/<id>/sweep.json", file=sys.stderr)
        return 2
    try:
        record = load_record(argv[0])
        parent, epochs = close_sweep(record)
    except PhiscaleError as err:
        print(f"phiscale: {err}", file=sys.stderr)
        return 1
    print(f"phiscale: sweep {record.id} closed: parent run {record.parent_run_id} {parent}; "
          f"epochs {epochs['spent']} spent of the full grid's {epochs['full']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
