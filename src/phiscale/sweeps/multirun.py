"""A Hydra multirun over a sweep file is a recorded sweep too (conf/train.yaml's `hydra.callbacks`).

    phiscale-train -m sweep.file=sweeps/phi.yaml 'sweep.index=range(0,8)' [overrides...]

Before any job starts, `on_multirun_start` writes the record into the multirun's sweep dir
(`<sweep dir>/sweep.json`, runs in `<sweep dir>/points/<i>`, linked from `<root>/sweeps/<id>`) and
opens the parent MLflow run; each job finds the record there (`phiscale.cli.train`). After the
last job, `on_multirun_end` sets the parent's status. Hydra 1.3's Callback API
(hydra.experimental.callback; "Callbacks" in the Hydra docs); this runs on the submitting host
when a launcher plugin sends the jobs elsewhere.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from phiscale.errors import PhiscaleError

INDEX_KEY, OWN_KEYS = "sweep.index", ("sweep.file", "sweep.index", "sweep.record")


def multirun_plan(task_overrides: list[str], size: int) -> tuple[list[int], list[str]]:
    """(the indices the multirun trains, the other overrides) from its command line's task overrides.

    Only `sweep.index` may be swept: each run of a sweep has one output dir, so other axes belong in
    the sweep file (`grid:`, `seeds:`).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    indices, extra = None, []
    for override in OverridesParser.create().parse_overrides(task_overrides):
        key = override.key_or_group
        if override.is_sweep_override() and key != INDEX_KEY:
            raise PhiscaleError(f"a multirun over sweep.file sweeps sweep.index only, not {override.input_line}: put "
                                "that axis in the sweep file (grid: or seeds:)")
        if key == INDEX_KEY:
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
            indices = [int(v) for v in values]
        elif key not in OWN_KEYS:
            extra.append(override.input_line)
    if indices is None:
        indices = list(range(size))
    bad = [i for i in indices if not 0 <= i < size]
    if bad:
        raise PhiscaleError(f"sweep.index values {bad} are outside the sweep's 0…{size - 1}")
    return sorted(set(indices)), extra


class SweepRecordCallback(Callback):
    """Records a multirun over `sweep.file` as a sweep (see the module docstring); other runs pass by."""

    def __init__(self) -> None:
        self.record = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.sweep.get("file") is None or config.sweep.get("record") is not None:
            return
        from hydra import compose

        from phiscale.sweeps.file import load_sweep
        from phiscale.sweeps.launch import settings_of
        from phiscale.sweeps.record import Submission, add_submission, create_record, now_iso, open_parent_run

        sweep = load_sweep(config.sweep.file)
        task = [str(o) for o in config.hydra.overrides.task]
        indices, extra = multirun_plan(task, len(sweep))
        settings = settings_of(compose(config_name="train", overrides=[*sweep.base, *extra]))
        command = shlex.join(["phiscale-train", "-m", *task])
        record = create_record(sweep, root=settings.root, extra=extra, submit_command=command,
                               tracking_uri=settings.tracking_uri, experiment=settings.experiment, indices=indices,
                               directory=Path(str(config.hydra.sweep.dir)))
        open_parent_run(record)
        add_submission(record, Submission("multirun", indices, command, now_iso()))
        self.record = record
        print(f"phiscale: sweep {record.id}: {len(indices)} runs of {sweep.name}; record {record.path}", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.record is None:
            return
        from phiscale.sweeps.status import counts, sweep_status, update_parent

        statuses = sweep_status(self.record)
        status = update_parent(self.record, statuses)
        summary = ", ".join(f"{n} {state}" for state, n in counts(statuses).items())
        print(f"phiscale: sweep {self.record.id}: {summary}; parent run {status}", flush=True)
