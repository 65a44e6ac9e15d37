"""What a run tells MLflow about itself: scale tags, the model's size, the summary, the best checkpoint.

`phiscale.tracking` sends these; this module only computes them from the plan, the model and the
finished Trainer.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from phiscale.train.plan import SUMMARY, RunPlan

SCALE_TAG_KEYS = ("family", "phi", "alpha", "beta", "gamma", "width_mult", "depth_mult", "resolution_mult",
                  "resolution")


def scale_tags(scale) -> dict[str, str]:
    """`model`, `family`, `phi`, α, β, γ, the multipliers and the native resolution, as MLflow tags."""
    tags = {"model": scale.name}
    for key in SCALE_TAG_KEYS:
        value = getattr(scale, key)
        if value is not None:
            tags[key] = f"{value:g}" if isinstance(value, float) else str(value)
    return tags


def profile_metrics(model, plan: RunPlan) -> dict[str, float]:
    """Params, MACs and FLOPs at train and eval resolution, activation memory: logged once."""
    from phiscale.models.profile import count_macs, profile_model

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


def summary(plan: RunPlan, cfg, trainer, module, run_id: str | None, restarts: int, status: str,
            started: float) -> dict[str, Any]:
    """The run's outcome, as written to `<output_dir>/summary.json` and logged as an artifact."""
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
    return {
        "status": status,
        "run_id": run_id,
        "run_name": plan.run_name,
        "tracking_uri": str(cfg.tracking.uri),
        "best_val_top1": module.best_val_top1,
        "final_metrics": metrics,
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "max_epochs": cfg.trainer.max_epochs,
        "max_steps": cfg.trainer.max_steps,
        "restarts": restarts,
        "wall_time_s": round(time.time() - started, 2),
        "plan": plan.to_json(),
    }


def write_summary(plan: RunPlan, content: dict[str, Any]) -> Path:
    """Atomically: a restart reads it (`plan.finished_summary`), and a full disk must not leave half of it."""
    from phiscale.paths import write_atomically

    path = plan.output_dir / SUMMARY
    write_atomically(path, json.dumps(content, indent=2))
    return path


def best_checkpoint_artifact(best_path: str, tracking_cfg) -> Path | None:
    """What to upload for the best checkpoint: the file, or (when large, or asked) a note of its path."""
    if not best_path or not Path(best_path).exists() or tracking_cfg.log_checkpoint == "none":
        return None
    path = Path(best_path)
    size_mb = path.stat().st_size / 2**20 if path.is_file() else float("inf")
    if tracking_cfg.log_checkpoint == "best" and size_mb <= float(tracking_cfg.max_checkpoint_mb):
        return path
    note = path.with_name("best_path.txt")
    note.write_text(str(path.resolve()) + "\n")
    return note


def dataset_inputs(data_cfg: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """The run's datasets as MLflow inputs (the runs table's Dataset column): for each split its
    name, a digest of its content (labels in file order and the file's size for a .beton; relative
    paths and labels for an ImageFolder), its source and size, and the split as the context tag."""
    from phiscale.data import dataset_sources
    from phiscale.data.beton_file import check_beton
    from phiscale.data.imagefolder import scan_image_folder

    inputs = []
    for split, source in zip(("training", "validation"), dataset_sources(data_cfg), strict=True):
        digest = hashlib.sha256()
        if data_cfg["loader"] == "ffcv":
            info = check_beton(source)
            digest.update(info.labels.tobytes())
            digest.update(str(Path(source).stat().st_size).encode())
            count, classes = info.num_samples, info.num_classes_seen
        else:
            index = scan_image_folder(source)
            for path, label in index.samples:
                digest.update(f"{path.relative_to(index.root)}\t{label}\n".encode())
            count, classes = len(index), len(index.classes)
        dataset = {
            "name": f"{data_cfg['name']}-{'train' if split == 'training' else 'val'}",
            "digest": digest.hexdigest()[:16],
            "source_type": "local",
            "source": json.dumps({"uri": str(Path(source).resolve())}),
            "schema": json.dumps({"image": f"{data_cfg['loader']} {'.beton' if data_cfg['loader'] == 'ffcv' else 'ImageFolder'}",
                                  "label": "int64"}),
            "profile": json.dumps({"num_samples": count, "num_classes": classes}),
        }
        inputs.append((dataset, {"mlflow.data.context": split}))
    return inputs


def note(plan: RunPlan, data_name: str) -> str:
    """The run's description on its MLflow page: what it trains, and where (the SLURM job)."""
    from phiscale.slurm.env import slurm_env

    job = slurm_env()
    where = f"; SLURM job {job.run_key} ({job.nnodes} node(s))" if job is not None else ""
    return f"phiscale: {describe(plan, data_name)}, world size {plan.world_size}{where}."


def determinism(plan: RunPlan) -> str:
    """What trainer.deterministic=true guarantees on this run's device, in one line."""
    from phiscale.train.seeding import CUDA_NONDETERMINISTIC

    if plan.accelerator == "gpu":
        return (f"deterministic kernels where CUDA has them (cuDNN, cuBLAS); still nondeterministic on this "
                f"device: {CUDA_NONDETERMINISTIC}; PyTorch warns when one runs")
    return "deterministic: every op on CPU is; the same seed and config give the same run"


def describe(plan: RunPlan, data_name: str) -> str:
    """One line saying what this run trains: model, φ and d/w/r, resolution, data, devices, threads."""
    s = plan.scale
    scale = f"φ={s.phi:g} " if s.phi is not None else ""
    return (
        f"{plan.run_name}: {s.name} {scale}(d={s.depth_mult:.3g} w={s.width_mult:.3g} r={s.resolution_mult:.3g}) "
        f"at {plan.train_resolution}px on {data_name}, {plan.world_size} {plan.accelerator} process(es), "
        f"global batch {plan.global_batch_size}, {plan.precision}"
        + (f"; per process {plan.threads.describe()}" if plan.threads is not None else "")
    )


def class_names(data_cfg: Mapping[str, Any], num_classes: int) -> list[str]:
    """The label names: an embedded dataset's own (digits, fashion_mnist), an ImageFolder's
    subfolders, else the label numbers."""
    from phiscale.data import EMBEDDED, embedded_classes

    if data_cfg["name"] in EMBEDDED:
        return list(embedded_classes(data_cfg["name"]))
    if data_cfg["loader"] == "torch":
        from phiscale.data import dataset_sources
        from phiscale.data.imagefolder import scan_image_folder

        return list(scan_image_folder(dataset_sources(data_cfg)[1]).classes)
    return [str(i) for i in range(num_classes)]


def model_params(plan: RunPlan, data_cfg: Mapping[str, Any], step: int, profile: Mapping[str, float]) -> dict[str, str]:
    """The LoggedModel's params: what the network is, what it takes, where it came from."""
    s = plan.scale
    params = {"model": s.name, "family": s.family, "phi": s.phi, "alpha": s.alpha, "beta": s.beta, "gamma": s.gamma,
              "width_mult": s.width_mult, "depth_mult": s.depth_mult, "resolution_mult": s.resolution_mult,
              "eval_resolution": plan.eval_resolution, "num_classes": plan.num_classes,
              "params": int(profile["model/params"]), "macs": int(profile["model/macs_eval"]),
              "class_names": json.dumps(class_names(data_cfg, plan.num_classes)),
              "mean": json.dumps(list(data_cfg["mean"])), "std": json.dumps(list(data_cfg["std"])),
              "input": "uint8 (N, 3, H, W), 0-255, normalised inside", "checkpoint_step": step,
              "run_name": plan.run_name, "data": json.dumps(dict(data_cfg))}
    return {k: (f"{v:g}" if isinstance(v, float) else str(v)) for k, v in params.items() if v is not None}


def save_run_model(plan: RunPlan, cfg, best: Path, datamodule, best_val_top1: float
                   ) -> tuple[Path, dict[str, str], dict[str, float], int]:
    """The best checkpoint's network as an MLflow model in `<output_dir>/model` (uint8 in, logits
    out; a few val images as its input example); returns (path, params, val metrics at its step, step)."""
    from omegaconf import OmegaConf

    from phiscale.models.profile import count_macs, count_params
    from phiscale.models.serving import UInt8Classifier, to_uint8
    from phiscale.tracking.models import MODEL_DIR, save_serving_model
    from phiscale.train.load import load_model

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    loaded = load_model(best)
    images, _ = next(iter(datamodule.val_loader))
    example = to_uint8(images[:4].detach().cpu().float(), data_cfg["mean"], data_cfg["std"]).numpy()
    serving = UInt8Classifier(loaded.network, data_cfg["mean"], data_cfg["std"]).eval()
    path = save_serving_model(serving, example, plan.num_classes, plan.output_dir / MODEL_DIR)
    profile = {"model/params": count_params(loaded.network),
               "model/macs_eval": count_macs(loaded.network, plan.eval_resolution)}
    metrics = dict(loaded.val_metrics)  # a DeepSpeed directory has none: the run's best score at least
    metrics.setdefault("val/top1_best", float(best_val_top1))
    return path, model_params(plan, data_cfg, loaded.step, profile), metrics, loaded.step
