"""`phiscale-train`: the Hydra app. Composes conf/, resolves a sweep point, and trains."""

from __future__ import annotations

import os
import sys

# Numba's threading layer and JIT cache must be set before FFCV/numba import anywhere.
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")

from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from phiscale import pause_for_start_up  # noqa: E402
from phiscale.config import conf_dir  # noqa: E402
from phiscale.errors import PhiscaleError, user_errors_as_one_line  # noqa: E402


def compose_sweep_point(cfg: DictConfig) -> tuple[DictConfig, dict[str, str]]:
    """Re-compose the config as run `sweep.index` of a sweep, and the tags of its MLflow run.

    With a record (`sweep.record=<sweep.json>`, or the record a multirun's callback wrote in its
    sweep dir) the run is the record's: its overrides, the command line's own, then the output dir,
    store and experiment the record pins; the run is tagged as a child of the sweep's parent run.
    Without one, it is point `sweep.index` of `sweep.file` as the file says now.
    """
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    cli = list(HydraConfig.get().overrides.task)
    record_path = sweep_record_path(cfg)
    if cfg.sweep.index is None:
        what = f"sweep.record={record_path}" if record_path else f"sweep.file={cfg.sweep.file}"
        raise PhiscaleError(f"{what} needs sweep.index=<point>; `phiscale-sweep {cfg.sweep.file or record_path}` "
                            "lists them")
    if record_path is None:
        from phiscale.sweeps.file import load_sweep

        sweep = load_sweep(cfg.sweep.file)
        composed = compose(config_name="train", overrides=[*sweep.overrides(int(cfg.sweep.index)), *cli])
        return composed, {"seed": str(composed.seed), **sweep.run_tags(int(cfg.sweep.index))}

    from phiscale.sweeps.record import load_record, quote_value
    from phiscale.sweeps.winner import run_overrides

    record = load_record(record_path)
    point = record.point(cfg.sweep.index)
    pinned = record.pinned(point.index)
    check_pinned(cfg, pinned, record.id)
    forced = [f"{key}={quote_value(value)}" for key, value in pinned.items()] + record.stage_overrides(point.index)
    own = run_overrides(record, point.index)  # a scale run's: its point's, then the search winner's α, β, γ
    composed = compose(config_name="train", overrides=[*own, *record.extra, *cli, *forced])
    return composed, {"seed": str(composed.seed), **record.child_tags(point.index)}


def sweep_record_path(cfg: DictConfig) -> Path | None:
    """`sweep.record`, else in a multirun over `sweep.file` the record its callback wrote in the sweep dir."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from phiscale.sweeps.record import RECORD

    if cfg.sweep.get("record"):
        return Path(str(cfg.sweep.record))
    hydra_cfg = HydraConfig.get()
    if cfg.sweep.file is not None and hydra_cfg.mode == RunMode.MULTIRUN:
        written = Path(str(hydra_cfg.sweep.dir)) / RECORD
        return written if written.is_file() else None
    return None


def check_pinned(cfg: DictConfig, pinned: dict[str, str], sweep_id: str) -> None:
    """Refuse a command line that sets a run's output dir, store or experiment to something else
    than its sweep's (the run would leave its sweep: another dir, or no parent in that store)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from phiscale.tracking.store import normalize_tracking_uri

    set_here = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task if "=" in o}
    same = {"tracking.uri": lambda a, b: normalize_tracking_uri(a) == normalize_tracking_uri(b),
            "paths.output_dir": lambda a, b: Path(a).resolve() == Path(b).resolve()}
    for key, theirs in pinned.items():
        mine = str(OmegaConf.select(cfg, key))
        if key in set_here and not same.get(key, str.__eq__)(mine, theirs):
            raise PhiscaleError(f"{key}={mine} differs from sweep {sweep_id}'s {theirs}: drop {key}= (a sweep's "
                                "runs keep the output dir, store and experiment of its record)")


def main() -> None:
    """The console script: `--help` answered here (see `print_help`), everything else by Hydra."""
    if print_help(sys.argv[1:]):
        return
    pause_for_start_up()  # the garbage collector, until the first step (phiscale/__init__.py)
    try:
        train_app()
    finally:
        leave_the_heap_to_the_os()


def leave_the_heap_to_the_os() -> None:
    """Before the interpreter shuts down: keep the garbage collector's passes off everything this process
    imported and built (torch, Lightning, MLflow, SQLAlchemy, numba), 1.5-2 s of a 1-step run's 7.5 s on
    2 cores (issue 31), paid by every run, array task and sweep point. Exit handlers and module teardown
    still run; only garbage in reference cycles is left for the OS to reclaim, and nothing of a run waits
    on it: its journal, checkpoints and summary are written and closed, the sender joined, before this."""
    import gc

    sys.stdout.flush()
    sys.stderr.flush()
    gc.freeze()
    gc.disable()


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
@user_errors_as_one_line  # inside Hydra, which would otherwise print a traceback
def train_app(cfg: DictConfig) -> None:
    tags: dict[str, str] = {}
    if cfg.sweep.file is not None or cfg.sweep.get("record"):
        cfg, tags = compose_sweep_point(cfg)
    say_starting(cfg)
    from phiscale.train.run import run_training  # torch and Lightning: seconds on a small machine

    run_training(cfg, extra_tags=tags)


HELP_FLAGS = {"--help", "-h"}


def print_help(argv: list[str]) -> bool:
    """`phiscale-train [overrides] --help` as Hydra prints it (conf/train.yaml's header, the groups and
    their options, the composed config, the footer), in a third of the time: Hydra's own help lists
    every group twice, its own included, deep-copying the config repository for each of 89 (0.8 s of
    a 2-core machine, issue 31). False (Hydra answers) for any other flag beside it (--cfg, --resolve,
    --hydra-help ...) or when composing fails, so that Hydra says why."""
    if not HELP_FLAGS & set(argv) or any(a.startswith("-") and a not in HELP_FLAGS for a in argv):
        return False
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    overrides = [a for a in argv if a not in HELP_FLAGS]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3", job_name="phiscale-train"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
            loader = GlobalHydra.instance().config_loader()
            groups = sorted(g for g in loader.list_groups("") if g != "hydra")
            options = {g: sorted(loader.get_group_options(g)) for g in groups}
    except Exception:  # noqa: BLE001 - Hydra's own help path reports a bad override its way
        GlobalHydra.instance().clear()
        return False
    help_cfg = cfg.hydra.help
    with open_dict(cfg):
        del cfg["hydra"]
    listing = "".join(f"{group}: {', '.join(names)}\n" for group, names in options.items() if names)
    print(f"{help_cfg.header}\n== Configuration groups ==\nCompose your configuration from those groups "
          f"(group=option)\n\n{listing}\n\n== Config ==\nOverride anything in the config (foo.bar=value)\n\n"
          f"{OmegaConf.to_yaml(cfg)}\n\n{help_cfg.footer}\n")
    return True


# Where a launcher puts a process's global rank (Lightning's order: lightning.fabric.utilities.rank_zero).
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def say_starting(cfg: DictConfig) -> None:
    """The run's first line, from the config alone: before torch and Lightning are imported (issue 31:
    the first line came after 6 s), on the process that speaks for the run (global rank 0)."""
    rank = next((os.environ[name] for name in RANK_VARIABLES if name in os.environ), "0")
    if rank == "0":
        print(f"phiscale: starting {cfg.run_name or cfg.model.name}: {cfg.model.name} on {cfg.data.name}", flush=True)


if __name__ == "__main__":
    main()
