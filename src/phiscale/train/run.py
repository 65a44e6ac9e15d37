"""One training run, start to finish: plan, model, data, MLflow run, Trainer, summary.

`run_training` is the whole story; each step is a call into the module that owns it:
`plan` (checks), `phiscale.models` (the network), `module`/`datamodule` (Lightning), `trainer`
(strategy and callbacks), `metadata` (what the run tells MLflow), `phiscale.tracking` (MLflow).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from phiscale.errors import DiskFull, disk_full_cause
from phiscale.train.plan import (
    RunPlan,
    build_augment,
    finished_summary,
    global_rank_from_env,
    make_plan,
    torch_threads,
)


def run_training(cfg: DictConfig, extra_callbacks: Iterable[Any] = (), extra_tags: Mapping[str, str] | None = None) -> dict:
    """Train one config; returns the run summary (also written to <output_dir>/summary.json)."""
    import lightning.pytorch as L

    from phiscale import tracking
    from phiscale.models import build_model
    from phiscale.train import checkpoint_io, metadata
    from phiscale.train.datamodule import ImageDataModule
    from phiscale.train.module import ImageClassifier
    from phiscale.train.seeding import seed_rank_stream
    from phiscale.train.trainer import build_trainer, quiet_console

    started = time.time()
    quiet_console()
    plan = make_plan(cfg)  # every check of the config, before any work
    tcfg = cfg.tracking
    uri = tracking.normalize_tracking_uri(str(tcfg.uri))
    tracking.short_http_timeouts(float(tcfg.connect_timeout_s))  # the sender retries, not MLflow's client
    if tcfg.mode == "online":
        tracking.check_reachable(uri, float(tcfg.connect_timeout_s))  # a wrong URI fails in seconds
    rank = global_rank_from_env()
    if (done := finished_summary(plan, cfg)) is not None:
        return _already_finished(plan, done) if rank == 0 else {}
    if rank == 0:  # what an earlier, killed attempt left: unreadable checkpoints aside, its temporaries gone
        checkpoint_io.set_aside(plan.unreadable, plan.resume_from)
        checkpoint_io.remove_stale_temps(plan.ckpt_dir)

    L.seed_everything(plan.seed, workers=True, verbose=False)  # the initial weights: the same on every rank
    torch.set_num_threads(torch_threads(plan))
    model = build_model(cfg.model.name, plan.num_classes, **plan.model_kwargs)
    ema_weights = _start_from_weights(plan, model, rank) if plan.weights_from is not None else None
    seed_rank_stream(plan.seed, rank)  # dropout, drop path, augmentation: each rank its own stream
    resolved = OmegaConf.to_container(cfg, resolve=True)
    module = ImageClassifier(model, optim_cfg=resolved["optim"], global_batch_size=plan.global_batch_size,
                             channels_last=bool(cfg.trainer.channels_last), compile_model=bool(cfg.trainer.compile),
                             run_config=resolved, augment=build_augment(cfg, rank), mean=resolved["data"]["mean"],
                             std=resolved["data"]["std"])
    if ema_weights is not None and module.ema is not None:
        module.ema.module.load_state_dict(ema_weights)
    datamodule = ImageDataModule(resolved["data"], train_resolution=plan.train_resolution,
                                 eval_resolution=plan.eval_resolution, seed=plan.seed, uint8_train=plan.augment)
    plan.ckpt_dir.mkdir(parents=True, exist_ok=True)
    environment = tracking.environment_tags(plan.world_size)
    logger = tracking.RunLogger(
        output_dir=plan.output_dir, tracking_uri=uri, experiment=str(tcfg.experiment), run_name=plan.run_name,
        params=tracking.flatten_config(resolved),
        tags=metadata.scale_tags(plan.scale) | environment | plan.tags | dict(extra_tags or {})
        | tracking.system_tags(metadata.note(plan, str(cfg.data.name)), commit=environment["git_commit"])
        | ({RESUMED_FROM_TAG: f"weights:{plan.weights_from}"} if plan.weights_from is not None else {}),
        mode=str(tcfg.mode), heartbeat_s=float(tcfg.heartbeat_s), retry_max_s=float(tcfg.retry_max_s),
        connect_timeout_s=float(tcfg.connect_timeout_s), system_metrics_s=float(tcfg.system_metrics_s),
    )
    if plan.weights_from is not None:
        from phiscale.train.callbacks import StartAtStep

        best, best_state = checkpoint_io.best_so_far(plan.weights_from)
        extra_callbacks = [*extra_callbacks, StartAtStep(plan.resume_step, best, best_state)]
    trainer, stops = build_trainer(cfg, plan, logger, extra_callbacks)  # Lightning's own checks, before the run opens
    status, error, unwritten = "failed", None, None
    try:
        if rank == 0:
            _open_run(logger, plan, cfg, model)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(plan.resume_from) if plan.resume_from else None)
        status = "interrupted" if stops.signals.stopped_by_signal else "finished"
    except BaseException as err:
        full = disk_full_of_run(err, plan)
        error = f"{type(err).__name__}: {err}" if full is None else str(full)
        if full is None:
            raise
        raise full from None  # one line: what did not fit, what is kept, and that the same command resumes
    finally:
        summary, unwritten = _close_run(logger, plan, cfg, trainer, module, stops, status, error, started,
                                        datamodule) if rank == 0 else ({}, None)
    _end_processes(stops, trainer)
    if unwritten is not None:  # the run ended as it should, but its summary is not on disk
        raise disk_full_of_run(unwritten, plan)
    return summary


def disk_full_of_run(err: BaseException, plan: RunPlan) -> DiskFull | None:
    """A full disk anywhere in the run (a checkpoint, the journal, summary.json, config.yaml) as one
    line (DiskFull) that adds the last complete checkpoint and what the same command does next;
    None when the disk is not why `err` happened."""
    from phiscale.paths import free_bytes
    from phiscale.train.checkpoint_io import choose_resume

    if not isinstance(err, DiskFull):
        if (cause := disk_full_cause(err)) is None:
            return None
        what = f"writing {Path(cause.filename).name}" if cause.filename else "writing the run's output"
        err = DiskFull(what, Path(cause.filename).parent if cause.filename else plan.output_dir, None,
                       free_bytes(plan.output_dir), code=cause.errno)
    ckpts = sorted(plan.ckpt_dir.glob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    kept = choose_resume(ckpts)
    move = ("free space there, or move the output dir to a larger disk and point paths.output_dir at it; then run "
            "the same command again")
    if kept.path is None:
        return err.with_fix(["no checkpoint was written yet"], f"{move}: it starts over in the same MLflow run")
    return err.with_fix([f"the last complete checkpoint, {kept.path.name} (step {kept.step}), is kept"],
                        f"{move}: it resumes the same MLflow run from that checkpoint")


RESUMED_FROM_TAG = "phiscale.resumed_from"


def _start_from_weights(plan: RunPlan, model, rank: int) -> dict | None:
    """resume=weights: the network from `plan.weights_from` (a .ckpt, or a DeepSpeed directory
    consolidated); rank 0 records where this stage began. Returns the EMA's weights, if saved."""
    from phiscale.train.checkpoint_io import mark_weights_start
    from phiscale.train.load import start_weights

    weights, ema = start_weights(plan.weights_from)
    model.load_state_dict(weights)
    if rank == 0:
        mark_weights_start(plan.ckpt_dir, plan.weights_from, plan.resume_step)
    return ema


def _open_run(logger, plan: RunPlan, cfg: DictConfig, model) -> None:
    """Create or continue the MLflow run (through its journal); say what is starting."""
    from phiscale.paths import write_atomically
    from phiscale.train import metadata

    record = logger.open()
    config = plan.output_dir / "config.yaml"
    write_atomically(config, OmegaConf.to_yaml(cfg, resolve=True))  # eval and export read it: never half of it
    if plan.weights_from is not None:
        print(f"phiscale: starting {record.run_id or 'the journaled run'} from the weights of {plan.weights_from} "
              f"(step {plan.resume_step}) with a fresh optimizer; steps continue after {plan.resume_step}")
    elif logger.resumed:
        print(f"phiscale: resuming {record.run_id or 'the journaled run'} from {plan.resume_from} "
              f"(restart {record.restarts})")
    else:
        logger.log_artifact(config)
        logger.log_metrics(metadata.profile_metrics(model, plan), step=0)
        for dataset, tags in metadata.dataset_inputs(cfg.data):
            logger.log_dataset(dataset, tags)
    logger.log_metrics({"run/restarts": float(record.restarts)}, step=plan.resume_step)
    logger.flush()
    where = logger.run_url or f"not in the store yet (journal: {logger.journal.path})"
    print(f"phiscale: training {metadata.describe(plan, str(cfg.data.name))}\n"
          f"phiscale: MLflow run {where}", flush=True)
    if cfg.trainer.deterministic is True:  # asked for: say what it guarantees here
        print(f"phiscale: {metadata.determinism(plan)}", flush=True)


def _close_run(logger, plan: RunPlan, cfg: DictConfig, trainer, module, stops, status: str, error: str | None,
               started: float, datamodule=None) -> tuple[dict, DiskFull | None]:
    """Summary and best checkpoint into the journal, the end status, the backlog sent (within
    tracking.drain_timeout_s); one line saying how it ended, one more if the store has not all of it.
    Returns the summary, and the DiskFull that kept it (or an artifact) off the disk: the end status
    is sent all the same."""
    from phiscale import tracking
    from phiscale.train import metadata

    if logger.record is None:  # failed before the run opened: nothing to close
        return {}, None
    summary = metadata.summary(plan, cfg, trainer, module, logger.run_id, logger.record.restarts, status, started)
    unwritten = None
    try:
        summary_path = metadata.write_summary(plan, summary)
        if status == "finished":
            best = metadata.best_checkpoint_artifact(stops.best.best_model_path, cfg.tracking)
            if best is not None:
                logger.log_artifact(best, "checkpoints")
            if (cfg.tracking.log_model or cfg.tracking.register) and stops.best.best_model_path:  # NAME needs a model
                _log_model(logger, plan, cfg, Path(stops.best.best_model_path), datamodule, module.best_val_top1)
        logger.log_artifact(summary_path)
    except DiskFull as err:
        unwritten = err
    left = logger.close(status, float(cfg.tracking.drain_timeout_s), error=error)
    summary["run_id"] = logger.run_id
    if unwritten is None:
        try:
            metadata.write_summary(plan, summary)
        except DiskFull as err:
            unwritten = err
    print(f"phiscale: run {status}: {plan.run_name}, best val top-1 {summary['best_val_top1']:.4f} after "
          f"{summary['global_step']} steps in {summary['wall_time_s']:.0f} s; output {plan.output_dir}", flush=True)
    if left:
        why = "offline mode" if cfg.tracking.mode == "offline" else "the tracking store is unreachable"
        print(f"phiscale: {left} entries are not in MLflow yet ({why}); they wait in {logger.journal.path}: "
              f"send them with `phiscale-sync {plan.output_dir}`", flush=True)
    elif logger.run_url:
        browse = "" if tracking.is_server(logger.tracking_uri) else f" (serve it: {tracking.ui_command(logger.tracking_uri)})"
        print(f"phiscale: MLflow run {logger.run_url}{browse}\n"
              f"phiscale: all runs {tracking.experiment_url(logger.tracking_uri, logger.record.experiment_id)}",
              flush=True)
    return summary, unwritten


def _log_model(logger, plan: RunPlan, cfg: DictConfig, best: Path, datamodule, best_val_top1: float) -> None:
    """The best weights as the run's MLflow model: saved here (pt2, `<output_dir>/model`), journaled
    for the sender (which logs it, and registers it with tracking.register). A failure is one line
    and never costs the run."""
    from phiscale.train import metadata

    started = time.monotonic()
    try:
        path, params, metrics, step = metadata.save_run_model(plan, cfg, best, datamodule, best_val_top1)
    except Exception as err:  # noqa: BLE001 (the run itself is done: keep it whatever this hits)
        print(f"phiscale: the run's model was not logged ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
              f"the run and {best} are kept", flush=True)
        return
    register = str(cfg.tracking.register) if cfg.tracking.register else None
    logger.log_model(path, params=params, metrics=metrics, step=step, register=register)
    print(f"phiscale: saved the model (best.ckpt, step {step}) for MLflow in {time.monotonic() - started:.1f} s",
          flush=True)


def _end_processes(stops, trainer) -> None:
    """Requeue a SLURM job stopped by its time-limit warning; take the process group down in order
    (ranks that exit with it still alive can abort in gloo's destructors)."""
    from phiscale.slurm import env as slurm

    stops.signals.restore()
    if stops.signals.should_requeue and trainer.is_global_zero and slurm.requeue(slurm.slurm_env()):
        print(f"phiscale: requeued SLURM job {slurm.slurm_env().run_key}", flush=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _already_finished(plan: RunPlan, summary: dict) -> dict:
    print(
        f"phiscale: {plan.output_dir} already finished (MLflow run {summary.get('run_id')}); "
        "raise trainer.max_epochs to continue it, or set run_name / paths.output_dir for a new run"
    )
    return summary


__all__ = ["run_training", "RunPlan", "make_plan"]
