"""`phiscale-eval`: evaluate a checkpoint on a val set and log the result to MLflow."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from phiscale.errors import PhiscaleError, user_errors_as_one_line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="phiscale-eval",
        description="Evaluate a phiscale checkpoint (top-1, top-5, loss) on a validation set and log the "
        "result to MLflow: into the checkpoint's own run (its output dir's tracking/run.json), else a new run.",
    )
    parser.add_argument("checkpoint", help="a .ckpt written by phiscale-train (best.ckpt, last.ckpt), a DeepSpeed "
                        "checkpoint dir, runs:/<run id>/model, models:/NAME/VERSION, models:/NAME@ALIAS or "
                        "models:/<model id>")
    parser.add_argument("--val-path", help="val .beton (ffcv) or ImageFolder dir (torch); default: the run's own")
    parser.add_argument("--loader", choices=("ffcv", "torch"), help="default: the run's data.loader")
    parser.add_argument("--resolution", type=int, help="eval resolution; default: the run's eval resolution")
    parser.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1), help="default: %(default)s")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights (if the run kept them)")
    parser.add_argument("--device", help="default: cuda where there is one, else cpu")
    parser.add_argument("--tracking-uri", help="default: the run's tracking URI")
    parser.add_argument("--no-log", action="store_true", help="print only, log nothing to MLflow")
    return parser.parse_args(argv)


def evaluate(model, loader, device) -> dict[str, float]:
    import torch
    from tqdm import tqdm

    from phiscale.train.module import topk_correct

    if isinstance(model, torch.nn.Module):
        model.eval().to(device)
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    with torch.no_grad():  # not inference_mode: FFCV copies into its reused buffers in place
        for images, labels in tqdm(loader, desc="eval", unit="batch", leave=False):
            logits = model(images.to(device)).float()
            labels = labels.to(device)
            loss_sum += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            c1, c5 = topk_correct(logits, labels)
            top1, top5, total = top1 + int(c1), top5 + int(c5), total + len(labels)
    if total == 0:
        raise PhiscaleError("the val set yielded no images; check --val-path")
    return {"eval/loss": loss_sum / total, "eval/top1": top1 / total, "eval/top5": top5 / total, "eval/images": total}


@user_errors_as_one_line
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from phiscale.data import dataset_sources, make_val_loader
    from phiscale.train.load import is_mlflow_uri, load_model

    source = str(args.checkpoint)
    if not is_mlflow_uri(source) and not Path(source).exists():
        raise PhiscaleError(f"checkpoint {source} does not exist; pass a .ckpt from <output_dir>/checkpoints/, "
                            "runs:/<run id>/model or models:/NAME@best")
    loaded = load_model(source, ema=args.ema, tracking_uri=args.tracking_uri)
    data = loaded.data
    if args.loader:
        data["loader"] = args.loader
    if args.val_path:
        data["val_path"] = args.val_path
    _, val_source = dataset_sources(data)
    resolution = int(args.resolution or loaded.eval_resolution or 0)
    if not resolution:
        raise PhiscaleError(f"{source} does not say its eval resolution; pass --resolution")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loader = make_val_loader(
        val_source, loader=data["loader"], batch_size=args.batch_size, num_workers=args.num_workers,
        resolution=resolution, mean=data["mean"], std=data["std"], device=device,
        crop_ratio=float(data["crop_ratio"]), num_classes=int(data["num_classes"]),
    )
    metrics = evaluate(uint8_input(loaded, data, device) if loaded.takes_uint8 else loaded.network, loader, device)
    print(f"{source}: top-1 {metrics['eval/top1']:.4f}  top-5 {metrics['eval/top5']:.4f}  "
          f"loss {metrics['eval/loss']:.4f}  ({int(metrics['eval/images'])} images at {resolution} px)")
    if not args.no_log:
        log(args, loaded, metrics)


def uint8_input(loaded, data: dict, device):
    """An MLflow model takes uint8 images: undo the loader's normalisation (exact on decoded pixels)."""
    from phiscale.models.serving import to_uint8

    network = loaded.network.to(device)
    return lambda images: network(to_uint8(images, data["mean"], data["std"]))


def log(args: argparse.Namespace, loaded, metrics: dict[str, float]) -> None:
    """Into the source's own run (a checkpoint's output dir, an MLflow model's source run), else a new run."""
    import mlflow

    from phiscale.tracking import (
        RunRecord,
        check_reachable,
        log_evaluation,
        normalize_tracking_uri,
        tracking_dir,
    )

    run_id, uri, experiment = loaded.run_id, args.tracking_uri, "phiscale"
    if loaded.config is not None:
        record = RunRecord.load(tracking_dir(loaded.output_dir)) if loaded.output_dir else None
        if record is not None and record.run_id is None:
            record = None  # its run is not in MLflow yet (offline, or phiscale-sync pending): a new run
        run_id = record.run_id if record else None
        uri = uri or (record.tracking_uri if record else loaded.config["tracking"]["uri"])
        experiment = loaded.config["tracking"]["experiment"]
    uri = normalize_tracking_uri(uri or mlflow.get_tracking_uri())
    check_reachable(uri, 10.0)
    tags = {"eval_checkpoint": loaded.source if loaded.takes_uint8 else str(Path(loaded.source).resolve()),
            "eval_weights": "ema" if args.ema else "model"}
    name = loaded.config["model"]["name"] if loaded.config else loaded.params.get("model", "model")
    run_id = log_evaluation(uri, metrics, step=loaded.step, run_id=run_id, experiment=experiment,
                            run_name=f"eval-{name}", tags=tags)
    print(f"logged to MLflow run {run_id} at {uri}")


if __name__ == "__main__":
    main()
