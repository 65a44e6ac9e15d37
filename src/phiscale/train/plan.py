"""The run plan: everything resolved and checked from the config before any training work.

`make_plan(cfg)` refuses a bad config (model knobs, trainer layout, stopping point, resolutions,
SLURM layout, output dir, resume) in a second or two, before a model is built, data is read or an
MLflow run exists. Training, `phiscale-eval` and `phiscale-export` read the plan's facts from here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from phiscale.errors import PhiscaleError
from phiscale.models.scaling import BASE_RESOLUTION, scaled_resolution

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
SUMMARY = "summary.json"
RESUME_MODES = ("auto", "never", "weights")


@dataclass
class RunPlan:
    """What one run will do, resolved from the config (see `make_plan`)."""

    run_name: str
    output_dir: Path
    resume_from: Path | None
    accelerator: str
    devices: int
    num_nodes: int
    precision: str
    global_batch_size: int
    train_resolution: int
    eval_resolution: int
    scale: Any  # phiscale.models.ModelScale
    model_kwargs: dict[str, Any]
    num_classes: int
    seed: int
    deterministic: bool = False
    augment: bool = False  # batch augmentation on the device (the loader hands over uint8 images)
    tags: dict[str, str] = field(default_factory=dict)  # from the plan itself (budget mode)
    resume_step: int = 0  # the optimizer step of resume_from (or of weights_from)
    weights_from: Path | None = None  # resume=weights: start from these weights, a fresh optimizer
    unreadable: tuple = ()  # (path, why) of the checkpoints passed over: set aside at start (rank 0)

    @property
    def ckpt_dir(self) -> Path:
        return self.output_dir / CHECKPOINTS

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))


def make_plan(cfg: DictConfig) -> RunPlan:
    """Resolve and check the config; nothing is built, trained or logged."""
    from phiscale.models import resolve_scale
    from phiscale.slurm.env import check_slurm_layout

    tcfg = cfg.trainer
    accelerator, devices = check_trainer(tcfg)
    check_stopping(tcfg)
    if cfg.tracking.get("register"):
        from phiscale.tracking.registry import check_name

        check_name(str(cfg.tracking.register))
    tags = apply_budget(cfg)
    kwargs = model_kwargs(cfg.model) | ({"bn_momentum": float(cfg.bn_momentum)} if cfg.bn_momentum is not None else {})
    num_classes = int(cfg.data.num_classes)
    scale = resolve_scale(str(cfg.model.name), num_classes, **kwargs)
    run_name = str(cfg.run_name) if cfg.run_name is not None else scale.run_name
    output_dir = Path(cfg.paths.output_dir or Path(cfg.paths.root) / "runs" / cfg.tracking.experiment / run_name)
    output_dir = output_dir.expanduser().resolve()
    check_slurm_layout(tcfg["devices"], int(tcfg["num_nodes"]), output_dir)

    train_res = int(cfg.train_resolution or dataset_resolution(scale.resolution, int(cfg.data.base_resolution)))
    eval_res = int(cfg.eval_resolution or train_res)
    for key, res in (("train_resolution", train_res), ("eval_resolution", eval_res)):
        if res < scale.total_stride:
            raise PhiscaleError(
                f"{key}={res} is below {scale.name}'s total stride {scale.total_stride}; "
                f"use {key}>={scale.total_stride}"
            )
    if cfg.data.num_workers == "auto":
        cfg.data.num_workers = auto_workers()
    check_data(cfg.data, train_res, eval_res)
    augment = build_augment(cfg, rank=0)  # every aug.* value checked now
    precision = str(tcfg.precision)
    if precision == "auto":
        precision = "bf16-mixed" if accelerator == "gpu" else "32-true"
    resume = resume_checkpoint(cfg, output_dir / CHECKPOINTS)
    weights_from, resume_step = None, resume.step
    if resume.path is not None:
        from phiscale.train.checkpoint_io import check_world_size, weights_start

        start = weights_start(resume.path, output_dir / CHECKPOINTS) if cfg.resume == "weights" else None
        if start is not None:  # the weights alone: no optimizer or loop state to reshard
            weights_from, resume_step = resume.path, start
        else:
            check_world_size(resume.path, devices * int(tcfg.num_nodes))
    return RunPlan(
        run_name=run_name,
        output_dir=output_dir,
        resume_from=resume.path if weights_from is None else None,
        resume_step=resume_step,
        weights_from=weights_from,
        unreadable=resume.unreadable,
        accelerator=accelerator,
        devices=devices,
        num_nodes=int(tcfg.num_nodes),
        precision=precision,
        global_batch_size=int(cfg.data.batch_size) * devices * int(tcfg.num_nodes) * int(tcfg.accumulate_grad_batches),
        train_resolution=train_res,
        eval_resolution=eval_res,
        scale=scale,
        model_kwargs=kwargs,
        num_classes=num_classes,
        seed=int(cfg.seed),
        deterministic=resolve_deterministic(tcfg.deterministic, accelerator),
        augment=augment.active,
        tags=tags,
    )


# ---------------------------------------------------------------- the model -----
def model_kwargs(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The `model` config group as `build_model` keywords (unset knobs left to the model's defaults)."""
    return {k: v for k, v in model_cfg.items() if k != "name" and v is not None}


def dataset_resolution(model_resolution: int, base_resolution: int) -> int:
    """The model's native (ImageNet-based) resolution carried over to a dataset's reference size,
    with the models' own rounding rule: 224 px on ImageNet is 32 px on the 32 px digits."""
    return scaled_resolution(model_resolution, base_resolution / BASE_RESOLUTION)


def apply_budget(cfg: DictConfig) -> dict[str, str]:
    """Budget mode: set model.phi to the largest φ within the budget; returns the tags to log."""
    budget = {k: v for k, v in cfg.budget.items() if v is not None}
    if not budget:
        return {}
    if cfg.model.name != "efficientnet":
        raise PhiscaleError(
            f"budget.* needs model=efficientnet (the φ family), not model={cfg.model.name}; add model=efficientnet"
        )
    from phiscale.models.budget import phi_for_budget

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


def build_augment(cfg: DictConfig, rank: int):
    """The run's BatchAugment from the `aug` group (its values checked here), seeded per rank."""
    from phiscale.augment import BatchAugment

    settings = {k: v for k, v in cfg.aug.items() if k != "policy"}
    return BatchAugment(str(cfg.aug.policy), **settings, num_classes=int(cfg.data.num_classes),
                        label_smoothing=float(cfg.optim.get("label_smoothing") or 0.0), seed=int(cfg.seed), rank=rank)


def task_cores() -> int:
    """The cores this process may use: its CPU affinity (what SLURM's --cpus-per-task binds)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers() -> int:
    """data.num_workers=auto: the task's cores less one for the training loop itself."""
    return max(1, task_cores() - 1)


def torch_threads(plan: RunPlan) -> int:
    """Intra-op threads for this process: OMP_NUM_THREADS when set (slurm/*.sbatch sets it to the
    task's CPUs), else the task's cores; on CPU shared by the node's training processes. Derived from
    these alone, never from the current count, so a run's numbers do not depend on what ran before
    it in the same process (the reduction order of a gradient changes with the thread count)."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    cores = int(omp) if omp.isdigit() and int(omp) > 0 else task_cores()
    return max(1, cores // plan.devices) if plan.accelerator == "cpu" else cores


def check_data(data_cfg: Mapping[str, Any], train_resolution: int, eval_resolution: int) -> None:
    """The loader settings and both data sources (paths exist, .beton headers read), as the loaders
    will check them inside training: a bad value is refused before the MLflow run exists."""
    from phiscale.data import dataset_sources
    from phiscale.data.batch_loader import check_loader_args

    for resolution in (train_resolution, eval_resolution):
        check_loader_args(
            batch_size=data_cfg["batch_size"], num_workers=data_cfg["num_workers"], resolution=resolution,
            mean=data_cfg["mean"], std=data_cfg["std"], order=data_cfg.get("order", "random"),
            crop_ratio=float(data_cfg["crop_ratio"]), min_crop_scale=float(data_cfg.get("min_crop_scale", 0.08)),
        )
    dataset_sources(data_cfg)


# ---------------------------------------------------------------- the trainer -----
def resolve_accelerator(accelerator: str) -> str:
    import torch

    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if accelerator == "cuda" else accelerator


def _devices_per_node(accelerator: str, devices: Any) -> int:
    """trainer.devices as a count; `auto` / -1 mean every GPU (or one CPU process)."""
    import torch

    from phiscale.slurm.env import device_count

    count = device_count(devices)
    if count is None:
        return torch.cuda.device_count() if accelerator == "gpu" else 1
    return count


def check_trainer(tcfg: Mapping[str, Any]) -> tuple[str, int]:
    """Refuse impossible trainer layouts before any work; returns (accelerator, devices per node)."""
    import torch

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


# trainer key -> (smallest allowed value, what it means), checked before the Trainer exists.
COUNTS = {
    "max_epochs": (-1, "-1 for no epoch limit (with trainer.max_steps), else the number of epochs"),
    "max_steps": (-1, "-1 for no step limit, else the number of optimizer steps"),
    "log_every_n_steps": (1, "log every N optimizer steps"),
    "ckpt_every_n_steps": (1, "write last.ckpt every N optimizer steps"),
    "keep_latest_k": (0, "step checkpoints kept beside last.ckpt; 0 keeps last.ckpt only"),
    "accumulate_grad_batches": (1, "batches per optimizer step"),
}


def check_stopping(tcfg: Mapping[str, Any]) -> None:
    """Counts Lightning would refuse after the run started (e.g. trainer.max_epochs=-3)."""
    for key, (low, meaning) in COUNTS.items():
        value = tcfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PhiscaleError(f"trainer.{key}={value!r} must be an integer >= {low} ({meaning})")
    if tcfg["max_epochs"] == -1 and tcfg["max_steps"] == -1:
        raise PhiscaleError("trainer.max_epochs=-1 and trainer.max_steps=-1 would train forever; set one of them")


def resolve_deterministic(value: Any, accelerator: str) -> bool:
    """trainer.deterministic: auto = on for CPU (free there), off for GPUs (it costs speed)."""
    if value == "auto":
        return accelerator == "cpu"
    if not isinstance(value, bool):
        raise PhiscaleError(f"trainer.deterministic={value!r} is not one of auto, true, false")
    return value


def global_rank_from_env() -> int:
    """This process's global rank before the Trainer exists (launcher / torchrun / SLURM env)."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return _get_rank() or 0


# ---------------------------------------------------------------- resume -----
def resume_checkpoint(cfg: DictConfig, ckpt_dir: Path):
    """`ckpt_path` when given, else (resume=auto or weights) the newest intact of `last.ckpt`,
    `best.ckpt` and the kept `step-*.ckpt` (trainer.keep_latest_k):
    an unreadable last.ckpt (a kill mid-write under an older writer, a full disk) is passed over
    for the newest intact one, and refused in one line when none is left, before anything is
    written. Returns a `checkpoint_io.ResumeChoice`."""
    from phiscale.train.checkpoint_io import ResumeChoice, checkpoint_step, choose_resume, refuse_unresumable

    if cfg.resume not in RESUME_MODES:
        raise PhiscaleError(f"resume={cfg.resume!r} is not one of: {', '.join(RESUME_MODES)}")
    if cfg.ckpt_path:
        path = Path(cfg.ckpt_path).expanduser()
        if not path.exists():
            raise PhiscaleError(f"ckpt_path={cfg.ckpt_path} does not exist; give an existing .ckpt (or drop ckpt_path)")
        try:
            return ResumeChoice(path, max(checkpoint_step(path), 0))
        except Exception as err:  # noqa: BLE001 (whatever it is, it cannot be resumed from)
            raise PhiscaleError(f"ckpt_path={cfg.ckpt_path} is not a readable checkpoint ({type(err).__name__}); "
                                "give an intact .ckpt (or drop ckpt_path)") from None
    from phiscale.train.checkpoint_io import kept_steps

    candidates = [ckpt_dir / LAST, ckpt_dir / BEST, *reversed(kept_steps(ckpt_dir))]
    present = [path for path in candidates if path.exists()]
    if not present:
        if cfg.resume == "weights":
            raise PhiscaleError(f"resume=weights but {ckpt_dir} holds no checkpoint; give ckpt_path=<a .ckpt or "
                                "DeepSpeed checkpoint directory> to start from its weights")
        return ResumeChoice(None, 0)
    if cfg.resume == "never":
        raise PhiscaleError(
            f"{present[0]} exists and resume=never; use resume=auto to continue it, or a new paths.output_dir / run_name"
        )
    choice = choose_resume(candidates)
    refuse_unresumable(choice, ckpt_dir.parent)
    return choice


def finished_summary(plan: RunPlan, cfg: DictConfig) -> dict | None:
    """The summary of a run in this output dir that already finished with the same stopping point."""
    if plan.resume_from is None:
        return None
    path = plan.output_dir / SUMMARY
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    same_end = summary.get("max_epochs") == cfg.trainer.max_epochs and summary.get("max_steps") == cfg.trainer.max_steps
    return summary if summary.get("status") == "finished" and same_end else None
