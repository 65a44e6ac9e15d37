"""One training run, start to finish: checks, model, data, MLflow run, Trainer, summary.

Everything that can be wrong with the config is checked before any training work starts.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from phiscale.errors import PhiscaleError

CHECKPOINTS = "checkpoints"
SUMMARY = "summary.json"


# ---------------------------------------------------------------- naming and layout -----
def run_name_for(scale) -> str:
    """A readable MLflow run name: `efficientnet-phi1.5`, `efficientnet_b3`, `mobilenet_v2-w0.5`."""
    if scale.name == "efficientnet":
        name = f"efficientnet-phi{scale.phi:g}"
        if (scale.alpha, scale.beta, scale.gamma) != (1.2, 1.1, 1.15):
            name += f"-a{scale.alpha:g}-b{scale.beta:g}-g{scale.gamma:g}"
        return name
    name = scale.name
    if scale.width_mult not in (None, 1.0) and scale.family != "efficientnet":
        name += f"-w{scale.width_mult:g}"
    if scale.resolution_mult not in (None, 1.0):
        name += f"-r{scale.resolution_mult:g}"
    return name


def model_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model_cfg.items() if k != "name" and v is not None}


def dataset_resolution(model_resolution: int, base_resolution: int) -> int:
    """The model's native (ImageNet-224-based) resolution carried over to a dataset's size,
    with the models' own rounding rule."""
    from phiscale.models.scaling import scaled_resolution

    return scaled_resolution(model_resolution, base_resolution / 224)


# ---------------------------------------------------------------- trainer checks -----
def _devices_per_node(accelerator: str, devices: Any) -> int:
    """trainer.devices as a count; `auto` / -1 mean every GPU (or one CPU process)."""
    from phiscale.slurm import device_count

    count = device_count(devices)
    if count is None:
        return torch.cuda.device_count() if accelerator == "gpu" else 1
    return count


def resolve_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if accelerator == "cuda" else accelerator


def check_trainer(tcfg: Mapping[str, Any]) -> tuple[str, int]:
    """Refuse impossible trainer settings before any work; returns (accelerator, devices per node)."""
    accelerator = resolve_accelerator(str(tcfg["accelerator"]))
    devices = _devices_per_node(accelerator, tcfg["devices"])
    if str(tcfg["strategy"]).startswith("deepspeed") and accelerator != "gpu":
        raise PhiscaleError(
            f"trainer.strategy={tcfg['strategy']} with trainer.accelerator={tcfg['accelerator']}: Lightning runs "
            "DeepSpeed on CUDA GPUs only; use trainer=ddp on CPU, or a GPU node"
        )
    if accelerator == "gpu":
        available = torch.cuda.device_count()
        if available == 0:
            raise PhiscaleError("trainer.accelerator=gpu but no CUDA device is visible; use trainer=cpu")
        if devices > available:
            raise PhiscaleError(
                f"trainer.devices={tcfg['devices']} but this node has {available} GPU(s); set trainer.devices<={available}"
            )
    elif accelerator == "cpu" and devices > (os.cpu_count() or 1):
        raise PhiscaleError(
            f"trainer.devices={devices} CPU processes but this node has {os.cpu_count()} cores; "
            f"set trainer.devices<={os.cpu_count()}"
        )
    if devices < 1 or int(tcfg["num_nodes"]) < 1:
        raise PhiscaleError(f"trainer.devices={tcfg['devices']}, trainer.num_nodes={tcfg['num_nodes']}: both must be >= 1")
    return accelerator, devices


def global_rank_from_env() -> int:
    """This process's global rank before the Trainer exists (launcher / torchrun / SLURM env)."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return _get_rank() or 0


# ---------------------------------------------------------------- the plan -----
@dataclass
class RunPlan:
    """Everything resolved from the config before training starts."""

    run_name: str
    output_dir: Path
    ckpt_dir: Path
    resume_from: Path | None
    accelerator: str
    devices: int
    num_nodes: int
    precision: str
    global_batch_size: int
    train_resolution: int
    eval_resolution: int

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes


def apply_budget(cfg: DictConfig) -> dict[str, str]:
    """Budget mode: set model.phi to the largest φ within the budget; returns the tags to log."""
    budget = {k: v for k, v in cfg.budget.items() if v is not None}
    if not budget:
        return {}
    if cfg.model.name != "efficientnet":
        raise PhiscaleError(
            f"budget.* needs model=efficientnet (the φ family), not model={cfg.model.name}; add model=efficientnet"
        )
    from phiscale.models.scaling import phi_for_budget

    phi = phi_for_budget(
        "efficientnet",
        max_macs=budget.get("macs"),
        max_params=budget.get("params"),
        max_memory=budget.get("memory"),
        alpha=cfg.model.alpha,
        beta=cfg.model.beta,
        gamma=cfg.model.gamma,
        num_classes=int(cfg.data.num_classes),
    )
    cfg.model.phi = float(phi)
    return {f"budget_{k}": f"{float(v):g}" for k, v in budget.items()} | {"budget_phi": f"{phi:g}"}


def make_plan(cfg: DictConfig, scale) -> RunPlan:
    tcfg = cfg.trainer
    accelerator, devices = check_trainer(tcfg)
    run_name = str(cfg.run_name) if cfg.run_name is not None else run_name_for(scale)
    output_dir = Path(cfg.paths.output_dir or Path(cfg.paths.root) / "runs" / cfg.tracking.experiment / run_name)
    output_dir = output_dir.expanduser().resolve()
    from phiscale.slurm import check_slurm_layout

    check_slurm_layout(tcfg["devices"], int(tcfg["num_nodes"]), output_dir)
    ckpt_dir = output_dir / CHECKPOINTS
    precision = str(tcfg.precision)
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "gpu" else "32-true"
    train_res = int(cfg.train_resolution or dataset_resolution(scale.resolution, int(cfg.data.base_resolution)))
    eval_res = int(cfg.eval_resolution or train_res)
    for key, res in (("train_resolution", train_res), ("eval_resolution", eval_res)):
        if res < 32:
            raise PhiscaleError(f"{key}={res} is below the network's total stride 32; use {key}>=32")
    return RunPlan(
        run_name=run_name,
        output_dir=output_dir,
        ckpt_dir=ckpt_dir,
        resume_from=resume_checkpoint(cfg, ckpt_dir),
        accelerator=accelerator,
        devices=devices,
        num_nodes=int(tcfg.num_nodes),
        precision=precision,
        global_batch_size=int(cfg.data.batch_size) * devices * int(tcfg.num_nodes) * int(tcfg.accumulate_grad_batches),
        train_resolution=train_res,
        eval_resolution=eval_res,
    )


def resume_checkpoint(cfg: DictConfig, ckpt_dir: Path) -> Path | None:
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path).expanduser()
        if not path.exists():
            raise PhiscaleError(f"ckpt_path={cfg.ckpt_path} does not exist; give an existing .ckpt (or drop ckpt_path)")
        return path
    last = ckpt_dir / "last.ckpt"
    if not last.exists():
        return None
    if cfg.resume == "never":
        raise PhiscaleError(
            f"{last} exists and resume=never; use resume=auto to continue it, or a new paths.output_dir / run_name"
        )
    if cfg.resume != "auto":
        raise PhiscaleError(f"resume={cfg.resume!r} is not one of: auto, never")
    return last


def finished_summary(plan: RunPlan, cfg: DictConfig) -> dict | None:
    """The summary of a run in this output dir that already finished with the same stopping point."""
    path = plan.output_dir / SUMMARY
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    same_end = summary.get("max_epochs") == cfg.trainer.max_epochs and summary.get("max_steps") == cfg.trainer.max_steps
    return summary if summary.get("status") == "finished" and same_end else None


# ---------------------------------------------------------------- the run -----
def run_training(cfg: DictConfig, extra_callbacks: Iterable[Any] = (), extra_tags: Mapping[str, str] | None = None) -> dict:
    """Train one config; returns the run summary (also written to <output_dir>/summary.json)."""
    import lightning.pytorch as L

    from phiscale.models import build_model
    from phiscale.tracking import (
        MLflowRunLogger,
        check_tracking_reachable,
        environment_tags,
        flatten_config,
        normalize_tracking_uri,
        ui_command,
    )
    from phiscale.train.callbacks import (
        LastCheckpoint,
        ProgressiveResize,
        ResumeSkip,
        ShareRunId,
        SignalCheckpoint,
        ThroughputMonitor,
        requeue_slurm_job,
    )
    from phiscale.train.datamodule import ImageDataModule
    from phiscale.train.module import ImageClassifier

    started = time.time()
    # Our checkpoint dir holds mlflow_run.json from the start; Lightning's warning about it is noise.
    warnings.filterwarnings("ignore", message=r".*exists and is not empty")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the EMA copy
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    tracking_uri = normalize_tracking_uri(str(cfg.tracking.uri))
    check_tracking_reachable(tracking_uri, float(cfg.tracking.connect_timeout_s))  # first: fail in ~10 s
    tags = dict(extra_tags or {}) | apply_budget(cfg)
    scale_kwargs = model_kwargs(cfg.model)
    model = build_model(cfg.model.name, num_classes=int(cfg.data.num_classes), **scale_kwargs)
    scale = model.scale
    if cfg.bn_momentum is not None:
        set_bn_momentum(model, float(cfg.bn_momentum))
    plan = make_plan(cfg, scale)
    rank = global_rank_from_env()

    done = finished_summary(plan, cfg) if plan.resume_from is not None else None
    if done is not None:
        if rank == 0:
            print(
                f"phiscale: {plan.output_dir} already finished (MLflow run {done.get('run_id')}); "
                "raise trainer.max_epochs to continue it, or set run_name / paths.output_dir for a new run"
            )
        return done

    if plan.accelerator == "cpu" and plan.devices > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // plan.devices))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    plan.ckpt_dir.mkdir(parents=True, exist_ok=True)

    logger = MLflowRunLogger(
        tracking_uri=tracking_uri,
        experiment=str(cfg.tracking.experiment),
        run_name=plan.run_name,
        ckpt_dir=plan.ckpt_dir,
        params=flatten_config(resolved),
        tags=scale_tags(scale) | environment_tags(plan.world_size) | tags,
    )
    if rank == 0:
        record = logger.open()
        (plan.output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if not logger.resumed:
            logger.log_artifact(plan.output_dir / "config.yaml")
            logger.log_metrics(profile_metrics(model, plan), step=0)
        else:
            print(f"phiscale: resuming MLflow run {record.run_id} from {plan.resume_from} (restart {record.restarts})")
        logger.log_metrics({"run/restarts": float(record.restarts)}, step=_ckpt_step(plan.resume_from))
        logger.flush()

    tcfg = cfg.trainer
    module = ImageClassifier(
        model,
        optim_cfg=OmegaConf.to_container(cfg.optim, resolve=True),
        global_batch_size=plan.global_batch_size,
        channels_last=bool(tcfg.channels_last),
        compile_model=bool(tcfg.compile),
        run_config=resolved,
    )
    datamodule = ImageDataModule(
        OmegaConf.to_container(cfg.data, resolve=True),
        train_resolution=plan.train_resolution,
        eval_resolution=plan.eval_resolution,
        seed=int(cfg.seed),
    )
    last = LastCheckpoint(plan.ckpt_dir, int(tcfg.ckpt_every_n_steps))
    signals = SignalCheckpoint(last)
    best = L.callbacks.ModelCheckpoint(
        dirpath=plan.ckpt_dir,
        filename="best",
        monitor="val/top1",
        mode="max",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks = [ShareRunId(), ThroughputMonitor(int(tcfg.log_every_n_steps)), last, signals, best, ResumeSkip()]
    if cfg.progressive.enabled:
        p = cfg.progressive
        callbacks.append(ProgressiveResize(final=plan.train_resolution, min_ratio=p.min_ratio, start=p.start, end=p.end))
    callbacks += list(extra_callbacks)

    trainer = L.Trainer(
        accelerator=plan.accelerator,
        devices=tcfg.devices if tcfg.devices not in ("auto", -1) else "auto",
        num_nodes=plan.num_nodes,
        strategy=build_strategy(tcfg, plan, int(cfg.data.batch_size)),
        precision=plan.precision,
        max_epochs=int(tcfg.max_epochs),
        max_steps=int(tcfg.max_steps),
        limit_train_batches=tcfg.limit_train_batches,
        limit_val_batches=tcfg.limit_val_batches,
        gradient_clip_val=tcfg.gradient_clip_val,
        accumulate_grad_batches=int(tcfg.accumulate_grad_batches),
        sync_batchnorm=bool(tcfg.sync_batchnorm),
        log_every_n_steps=int(tcfg.log_every_n_steps),
        val_check_interval=tcfg.val_check_interval,
        enable_progress_bar=bool(tcfg.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # FFCV shards per rank itself
        logger=logger,
        callbacks=callbacks,
        default_root_dir=str(plan.output_dir),
        plugins=slurm_plugins(),
    )
    status, summary = "failed", {}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(plan.resume_from) if plan.resume_from else None)
        status = "interrupted" if signals.stopped_by_signal else "finished"
    finally:
        if trainer.is_global_zero:
            summary = write_summary(plan, cfg, trainer, module, logger, status, started)
            if status == "finished":
                log_best_checkpoint(logger, best.best_model_path, cfg.tracking)
            logger.log_artifact(plan.output_dir / SUMMARY)
            logger.finalize({"finished": "success"}.get(status, status))
    if signals.should_requeue and trainer.is_global_zero:
        requeue_slurm_job()
    if trainer.is_global_zero:
        print(
            f"\nphiscale: run {status}: {plan.run_name}  (MLflow run id {logger.run_id})\n"
            f"  best val top-1: {summary.get('best_val_top1')}\n"
            f"  output dir:     {plan.output_dir}\n"
            f"  browse:         {ui_command(tracking_uri)}"
        )
        return summary
    return {}


def set_bn_momentum(model, momentum: float) -> None:
    """Running statistics that follow the weights within ~1/momentum steps (PyTorch convention)."""
    if not 0.0 < momentum <= 1.0:
        raise PhiscaleError(f"bn_momentum={momentum} must be in (0, 1] (PyTorch convention; TF's 0.99 is 0.01)")
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def _ckpt_step(path: Path | None) -> int:
    if path is None:
        return 0
    try:
        return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("global_step", 0))
    except Exception:
        return 0


def scale_tags(scale) -> dict[str, str]:
    keys = ("family", "phi", "alpha", "beta", "gamma", "width_mult", "depth_mult", "resolution_mult", "resolution")
    tags = {"model": scale.name}
    tags.update({k: f"{getattr(scale, k):g}" if isinstance(getattr(scale, k), float) else str(getattr(scale, k))
                 for k in keys if getattr(scale, k, None) is not None})
    return tags


def profile_metrics(model, plan: RunPlan) -> dict[str, float]:
    """Params, MACs and FLOPs at train and eval resolution, activation memory: logged once."""
    from phiscale.profile import count_macs, profile_model

    was_training = model.training
    model.eval()
    try:
        train = profile_model(model, plan.train_resolution)
        eval_macs = train.macs if plan.eval_resolution == plan.train_resolution else count_macs(model, plan.eval_resolution)
    finally:
        model.train(was_training)
    return {
        "model/params": float(train.params),
        "model/macs_train": float(train.macs),
        "model/macs_eval": float(eval_macs),
        "model/flops_train": float(2 * train.macs),
        "model/flops_eval": float(2 * eval_macs),
        "model/activation_mb": train.activation_bytes / 2**20,
        "train/resolution": float(plan.train_resolution),
        "eval/resolution": float(plan.eval_resolution),
    }


def build_strategy(tcfg, plan: RunPlan, micro_batch: int):
    strategy = str(tcfg.strategy)
    if strategy.startswith("deepspeed"):
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


def write_summary(plan, cfg, trainer, module, logger, status: str, started: float) -> dict:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    summary = {
        "status": status,
        "run_id": logger.run_id,
        "run_name": plan.run_name,
        "tracking_uri": logger.tracking_uri,
        "best_val_top1": module.best_val_top1,
        "final_metrics": metrics,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "max_epochs": cfg.trainer.max_epochs,
        "max_steps": cfg.trainer.max_steps,
        "restarts": logger.record.restarts if logger.record else 0,
        "wall_time_s": round(time.time() - started, 2),
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(plan).items()},
    }
    path = plan.output_dir / SUMMARY
    path.write_text(json.dumps(summary, indent=2))
    return summary


def log_best_checkpoint(logger, best_path: str, tracking_cfg) -> None:
    """Upload the best checkpoint, or only its path when large (or when asked)."""
    if not best_path or not Path(best_path).exists() or tracking_cfg.log_checkpoint == "none":
        return
    path = Path(best_path)
    size_mb = path.stat().st_size / 2**20 if path.is_file() else float("inf")
    if tracking_cfg.log_checkpoint == "best" and size_mb <= float(tracking_cfg.max_checkpoint_mb):
        logger.log_artifact(path, "checkpoints")
    else:
        note = path.with_name("best_path.txt")
        note.write_text(str(path.resolve()) + "\n")
        logger.log_artifact(note, "checkpoints")


__all__ = ["run_training", "RunPlan", "make_plan", "run_name_for"]
