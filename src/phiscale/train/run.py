"""One training run, start to finish: plan, model, data, MLflow run, Trainer, summary.

`run_training` is the whole story; each step is a call into the module that owns it:
`plan` (checks), `phiscale.models` (the network), `module`/`datamodule` (Lightning), `trainer`
(strategy and callbacks), `metadata` (what the run tells MLflow), `phiscale.tracking` (MLflow).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from phiscale.train.plan import RunPlan, finished_summary, global_rank_from_env, make_plan


def run_training(cfg: DictConfig, extra_callbacks: Iterable[Any] = (), extra_tags: Mapping[str, str] | None = None) -> dict:
    """Train one config; returns the run summary (also written to <output_dir>/summary.json)."""
    import lightning.pytorch as L

    from phiscale import tracking
    from phiscale.models import build_model
    from phiscale.train import metadata
    from phiscale.train.datamodule import ImageDataModule
    from phiscale.train.module import ImageClassifier
    from phiscale.train.trainer import build_trainer, quiet_console

    started = time.time()
    quiet_console()
    plan = make_plan(cfg)  # every check of the config, before any work
    uri = tracking.normalize_tracking_uri(str(cfg.tracking.uri))
    tracking.check_reachable(uri, float(cfg.tracking.connect_timeout_s))  # a wrong URI fails in seconds
    rank = global_rank_from_env()
    if (done := finished_summary(plan, cfg)) is not None:
        return _already_finished(plan, done) if rank == 0 else {}

    L.seed_everything(plan.seed, workers=True, verbose=False)
    if plan.accelerator == "cpu" and plan.devices > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // plan.devices))
    model = build_model(cfg.model.name, plan.num_classes, **plan.model_kwargs)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    module = ImageClassifier(model, optim_cfg=resolved["optim"], global_batch_size=plan.global_batch_size,
                             channels_last=bool(cfg.trainer.channels_last), compile_model=bool(cfg.trainer.compile),
                             run_config=resolved)
    datamodule = ImageDataModule(resolved["data"], train_resolution=plan.train_resolution,
                                 eval_resolution=plan.eval_resolution, seed=plan.seed)
    plan.ckpt_dir.mkdir(parents=True, exist_ok=True)
    logger = tracking.MLflowRunLogger(
        tracking_uri=uri, experiment=str(cfg.tracking.experiment), run_name=plan.run_name, ckpt_dir=plan.ckpt_dir,
        params=tracking.flatten_config(resolved),
        tags=metadata.scale_tags(plan.scale) | tracking.environment_tags(plan.world_size) | plan.tags | dict(extra_tags or {}),
    )
    trainer, stops = build_trainer(cfg, plan, logger, extra_callbacks)  # Lightning's own checks, before the run opens
    if rank == 0:
        _open_run(logger, plan, cfg, model)
    status = "failed"
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(plan.resume_from) if plan.resume_from else None)
        status = "interrupted" if stops.signals.stopped_by_signal else "finished"
    finally:
        summary = _close_run(logger, plan, cfg, trainer, module, stops, status, started) if trainer.is_global_zero else {}
    _end_processes(stops, trainer)
    return summary


def _open_run(logger, plan: RunPlan, cfg: DictConfig, model) -> None:
    """Create or reopen the MLflow run; log what only a new run needs; say what is starting."""
    from phiscale.train import metadata

    record = logger.open()
    config = plan.output_dir / "config.yaml"
    config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if logger.resumed:
        print(f"phiscale: resuming MLflow run {record.run_id} from {plan.resume_from} (restart {record.restarts})")
    else:
        logger.log_artifact(config)
        logger.log_metrics(metadata.profile_metrics(model, plan), step=0)
    logger.log_metrics({"run/restarts": float(record.restarts)}, step=metadata.checkpoint_step(plan.resume_from))
    logger.flush()
    print(f"phiscale: training {metadata.describe(plan, str(cfg.data.name))}\n"
          f"phiscale: MLflow run {logger.run_url}", flush=True)


def _close_run(logger, plan: RunPlan, cfg: DictConfig, trainer, module, stops, status: str, started: float) -> dict:
    """Summary, best checkpoint and end status into MLflow; one line saying how it ended."""
    from phiscale import tracking
    from phiscale.train import metadata

    restarts = logger.record.restarts if logger.record else 0
    summary = metadata.summary(plan, cfg, trainer, module, logger.run_id, restarts, status, started)
    summary_path = metadata.write_summary(plan, summary)
    if status == "finished":
        best = metadata.best_checkpoint_artifact(stops.best.best_model_path, cfg.tracking)
        if best is not None:
            logger.log_artifact(best, "checkpoints")
    logger.log_artifact(summary_path)
    logger.finalize({"finished": "success"}.get(status, status))
    best_top1 = summary["best_val_top1"]
    print(f"phiscale: run {status}: {plan.run_name}, best val top-1 {best_top1:.4f} after {summary['global_step']} "
          f"steps in {summary['wall_time_s']:.0f} s; output {plan.output_dir}; MLflow run {logger.run_url}", flush=True)
    if not logger.tracking_uri.startswith(("http://", "https://")):
        print(f"phiscale: browse with `{tracking.ui_command(logger.tracking_uri)}`", flush=True)
    return summary


def _end_processes(stops, trainer) -> None:
    """Requeue a SLURM job stopped by its time-limit warning; take the process group down in order
    (ranks that exit with it still alive can abort in gloo's destructors)."""
    from phiscale import slurm

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
