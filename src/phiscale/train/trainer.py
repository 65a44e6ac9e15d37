"""The Lightning Trainer for a run plan: strategy, SLURM plugin, callbacks, and a quiet console."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
from omegaconf import DictConfig, OmegaConf

from phiscale.train.callbacks import (
    CollectorFromFirstStep,
    LastCheckpoint,
    ProgressiveResize,
    ProgressLines,
    SendFromFirstStep,
    ShareRunId,
    SignalCheckpoint,
    ThroughputMonitor,
)
from phiscale.train.checkpoint_io import AtomicCheckpointIO
from phiscale.train.disk_room import CheckpointRoom
from phiscale.train.early_stop import asha_callbacks
from phiscale.train.plan import RunPlan

# Lightning's INFO lines that phiscale's own start line replaces, and its advertisement.
LIGHTNING_NOISE = (
    "💡 Tip:",
    "GPU available:",
    "TPU available:",
    "HPU available:",
    "was configured so validation will run",
    "Loading `train_dataloader` to estimate number of stepping batches",
)
# Warnings that do not apply to phiscale's runs.
IGNORED_WARNINGS = (
    r".*exists and is not empty",  # a resumed run's checkpoint dir holds last.ckpt
    r"Found \d+ module\(s\) in eval mode",  # the EMA copy
    r".*isinstance\(treespec, LeafSpec\)",
    r"It is recommended to use `self.log\(.*sync_dist=True",  # val sums are reduced by the module itself
    r"You're resuming from a checkpoint that ended before the epoch ended",  # our loader is stateful (datamodule)
    r"You have overridden `on_after_batch_transfer` in `LightningModule`",  # the module augments, on purpose
)


@dataclass
class StopCallbacks:
    """The callbacks run_training asks after fit: how it stopped, and the best checkpoint."""

    signals: SignalCheckpoint
    best: L.callbacks.ModelCheckpoint


def build_trainer(cfg: DictConfig, plan: RunPlan, logger, extra_callbacks: Iterable[Any] = ()
                  ) -> tuple[L.Trainer, StopCallbacks]:
    """The Trainer for `plan`; building it is the last check of the config (Lightning's own)."""
    tcfg = cfg.trainer
    last = LastCheckpoint(plan.ckpt_dir, int(tcfg.ckpt_every_n_steps), int(tcfg.get("keep_latest_k", 0)))
    signals = SignalCheckpoint(last)
    best = L.callbacks.ModelCheckpoint(
        dirpath=plan.ckpt_dir,
        filename="best",
        monitor="val/top1",
        mode="max",
        save_top_k=1,
        save_on_train_epoch_end=False,  # only after a validation, with that validation's score
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks = [ShareRunId(), ThroughputMonitor(int(tcfg.log_every_n_steps)), last, signals, best,
                 CollectorFromFirstStep()]
    if not str(tcfg.strategy).startswith("deepspeed"):  # its directories are another layout (disk_room)
        callbacks.append(CheckpointRoom(plan.ckpt_dir))
    bar = progress_bar(tcfg.progress_bar)
    if tcfg.progress_bar == "auto" and not bar:  # a SLURM .out file: plain lines, not a redrawn bar
        callbacks.append(ProgressLines(int(tcfg.log_every_n_steps)))
    callbacks += asha_callbacks(cfg, getattr(logger, "tracking_uri", None))  # a sweep stage's early stopping
    if plan.world_size == 1 and hasattr(logger, "hold_sending"):  # MLflow after the first step (issue 31)
        callbacks.append(SendFromFirstStep(logger))
    if cfg.progressive.enabled:
        p = cfg.progressive
        callbacks.append(ProgressiveResize(final=plan.train_resolution, min_ratio=p.min_ratio, start=p.start,
                                           end=p.end, minimum=plan.scale.total_stride))
    trainer = L.Trainer(
        accelerator=plan.accelerator,
        devices=tcfg.devices if tcfg.devices not in ("auto", -1) else "auto",
        num_nodes=plan.num_nodes,
        strategy=build_strategy(tcfg, plan, int(cfg.data.batch_size)),
        precision=plan.precision,
        # "warn": deterministic kernels where they exist, a warning (not an error) for the rest
        deterministic=("warn" if plan.accelerator == "gpu" else True) if plan.deterministic else False,
        max_epochs=int(tcfg.max_epochs),
        max_steps=int(tcfg.max_steps),
        limit_train_batches=tcfg.limit_train_batches,
        limit_val_batches=tcfg.limit_val_batches,
        gradient_clip_val=tcfg.gradient_clip_val,
        accumulate_grad_batches=int(tcfg.accumulate_grad_batches),
        sync_batchnorm=bool(tcfg.sync_batchnorm),
        log_every_n_steps=int(tcfg.log_every_n_steps),
        val_check_interval=tcfg.val_check_interval,
        enable_progress_bar=bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # FFCV shards per rank itself
        logger=logger,
        callbacks=[*callbacks, *extra_callbacks],
        default_root_dir=str(plan.output_dir),
        plugins=[AtomicCheckpointIO(), *slurm_plugins()],  # checkpoints never through the system temp dir
    )
    return trainer, StopCallbacks(signals, best)


def progress_bar(setting: Any) -> bool:
    """trainer.progress_bar: true / false, or auto: a bar on a terminal, plain lines elsewhere."""
    if setting == "auto":
        return sys.stdout.isatty()
    if not isinstance(setting, bool):
        from phiscale.errors import PhiscaleError

        raise PhiscaleError(f"trainer.progress_bar={setting!r} is not one of auto, true, false")
    return setting


def build_strategy(tcfg, plan: RunPlan, micro_batch: int):
    """`trainer.strategy` as Lightning's strategy object (gloo DDP on CPU, NCCL on GPU; DeepSpeed)."""
    strategy = str(tcfg.strategy)
    if strategy == "deepspeed":
        from phiscale.train.deepspeed import deepspeed_strategy

        return deepspeed_strategy(
            OmegaConf.to_container(tcfg.deepspeed, resolve=True) if tcfg.deepspeed else None,
            micro_batch_size=micro_batch,
            grad_accum=int(tcfg.accumulate_grad_batches),
            precision=plan.precision,
        )
    if strategy == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(process_group_backend="gloo" if plan.accelerator == "cpu" else "nccl")
    return strategy


def slurm_plugins() -> list:
    """On SLURM, let Lightning read ranks from SLURM but keep requeueing ours (SignalCheckpoint)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def _not_noise(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(noise in message for noise in LIGHTNING_NOISE)


def quiet_console() -> None:
    """Each line once: Lightning prints through its own handler only (not Hydra's root handler
    too), without its advertisement and device chatter; the srun hint only where SLURM runs."""
    from phiscale.slurm.env import slurm_env

    lightning_logger = logging.getLogger("lightning")
    lightning_logger.propagate = False
    for handler in lightning_logger.handlers:
        if _not_noise not in handler.filters:
            handler.addFilter(_not_noise)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).propagate = True  # up to "lightning" (and no further)
        for handler in list(logging.getLogger(name).handlers):
            logging.getLogger(name).removeHandler(handler)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial tables..."
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if slurm_env() is None:
        warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
