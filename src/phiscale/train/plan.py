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
    threads: ThreadPlan | None = None  # torch threads and loader workers, from the task's CPUs
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
    threads = plan_threads(accelerator, devices, cfg.data.num_workers)
    cfg.data.num_workers = threads.loader_workers
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
        threads=threads,
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
    base = {k: cfg.model.get(k) for k in ("width_mult", "depth_mult", "resolution_mult")}
    if any(v not in (None, 1.0) for v in base.values()):
        raise PhiscaleError(f"budget.* searches φ from B0 and model.{'/'.join(base)}={list(base.values())} set "
                            "another base network; drop those keys or pick model.phi by hand")
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


# ---------------------------------------------------------------- threads -----
# The loader's share of a process's CPUs, by accelerator; torch computes on the rest. The loader
# decodes in its own threads (FFCV: numba's OpenMP pool, driven from its EpochIterator thread;
# torch loader: worker processes) while torch computes in its own OpenMP pool (torch's bundled
# libgomp: a second runtime). Each pool's idle threads spin before they sleep (libgomp's
# GOMP_SPINCOUNT, https://gcc.gnu.org/onlinedocs/libgomp/GOMP_005fSPINCOUNT.html), so two pools
# sharing a core slow each other: their threads together never exceed the process's CPUs.
# cpu: the model's compute dwarfs decoding (digits demo: data_wait_frac < 1% with one worker), a quarter
#      of the CPUs decode; measured on 2 cores (benchmarks/threads.py): 2 torch threads beside the
#      loader took 1.6x (2 workers) and 3.1x (1 worker) the wall time of 1 thread + 1 worker.
# gpu: the device computes; every CPU but the training loop's decodes (ffcv-imagenet gives its loader
#      the cores, https://github.com/libffcv/ffcv-imagenet rn50 configs: num_workers 12 per GPU).
LOADER_SHARE = {"cpu": 0.25, "gpu": 1.0}


@dataclass(frozen=True)
class ThreadPlan:
    """How one training process uses its CPUs (`size_threads`)."""

    cpus: int  # this process's CPUs
    bound_by: str  # what set them, e.g. "CPU affinity 2 / 1 process(es)", "OMP_NUM_THREADS=1"
    torch_threads: int  # torch's intra-op threads (torch.set_num_threads)
    loader_workers: int  # data.num_workers: FFCV's decode threads, the torch loader's processes

    def describe(self) -> str:
        return (f"{self.cpus} CPU(s) ({self.bound_by}): {self.torch_threads} torch thread(s), "
                f"{self.loader_workers} loader worker(s)")


def _positive(name: str, value: str | int | None) -> int | None:
    """An environment count (OMP_NUM_THREADS may be a nested list, "4,2": its first level counts)."""
    value = None if value is None else str(value)
    if value is None or value.strip() == "":
        return None
    head = value.split(",")[0].strip()
    if not head.isdigit() or int(head) < 1:
        raise PhiscaleError(f"{name}={value!r} is not a positive thread count; unset it, or give this task's "
                            f"CPUs, e.g. {name}=4")
    return int(head)


def size_threads(affinity: int, *, omp_num_threads: str | None = None, slurm_cpus_per_task: str | None = None,
                 processes: int = 1, accelerator: str = "cpu", loader_workers: int | str = "auto") -> ThreadPlan:
    """Torch's threads and the loader's workers, together, from one process's CPUs: the fewest of its CPU
    affinity shared by `processes` training processes, SLURM's --cpus-per-task and OMP_NUM_THREADS (each
    when set; both per task). `loader_workers`: "auto" (LOADER_SHARE) or the user's count, which torch
    then works around. A pure function of its arguments: a run's numbers never depend on what ran
    before it in the same process (a gradient's reduction order changes with the thread count)."""
    if accelerator not in LOADER_SHARE:
        raise PhiscaleError(f"no thread sizing for accelerator {accelerator!r}; expected one of {', '.join(LOADER_SHARE)}")
    bounds = {f"CPU affinity {affinity} / {processes} process(es)": max(1, affinity // max(1, processes))}
    for name, value in (("SLURM_CPUS_PER_TASK", slurm_cpus_per_task), ("OMP_NUM_THREADS", omp_num_threads)):
        if (count := _positive(name, value)) is not None:
            bounds[f"{name}={count}"] = count
    bound_by, cpus = min(bounds.items(), key=lambda item: item[1])
    if loader_workers == "auto":
        workers = min(max(1, round(cpus * LOADER_SHARE[accelerator])), max(1, cpus - 1))
    elif isinstance(loader_workers, bool) or not isinstance(loader_workers, int) or loader_workers < 0:
        raise PhiscaleError(f"data.num_workers={loader_workers!r} must be auto or an integer >= 0")
    else:
        workers = loader_workers
    return ThreadPlan(cpus=cpus, bound_by=bound_by, torch_threads=max(1, cpus - workers), loader_workers=workers)


def shares_cpus_with_other_ranks(job) -> bool:
    """Whether this node's training processes share one CPU set: yes when Lightning (or torchrun)
    starts them; no when SLURM starts each as its own task (srun, bound to its --cpus-per-task)."""
    return job is None or job.interactive or job.ntasks is None


def plan_threads(accelerator: str, devices: int, loader_workers: int | str,
                 environ: Mapping[str, str] | None = None) -> ThreadPlan:
    """`size_threads` for this process: its affinity, its environment and its SLURM task (SlurmEnv)."""
    from phiscale.slurm.env import slurm_env

    env = os.environ if environ is None else environ
    job = slurm_env(env)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return size_threads(affinity, omp_num_threads=env.get("OMP_NUM_THREADS"),
                        slurm_cpus_per_task=job.cpus_per_task if job is not None else None,
                        processes=devices if shares_cpus_with_other_ranks(job) else 1,
                        accelerator=accelerator, loader_workers=loader_workers)


def torch_threads(plan: RunPlan) -> int:
    """Intra-op threads for this process (`plan.threads`, sized with the loader's workers)."""
    return plan.threads.torch_threads


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
            flip_prob=float(data_cfg.get("flip_prob", 0.5)),
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
        except PhiscaleError:  # it says what is missing (a DeepSpeed directory's tag or shard)
            raise
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
