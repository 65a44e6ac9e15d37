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
    parser.add_argument("checkpoint", type=Path, help="a .ckpt written by phiscale-train (best.ckpt, last.ckpt)")
    parser.add_argument("--val-path", help="val .beton (ffcv) or ImageFolder dir (torch); default: the run's own")
    parser.add_argument("--loader", choices=("ffcv", "torch"), help="default: the run's data.loader")
    parser.add_argument("--resolution", type=int, help="eval resolution; default: the run's eval resolution")
    parser.add_argument("--batch-size", type=int, default=256, help="default: %(default)s")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1), help="default: %(default)s")
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights (if the run kept them)")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu", help="default: %(default)s")
    parser.add_argument("--tracking-uri", help="default: the run's tracking URI")
    parser.add_argument("--no-log", action="store_true", help="print only, log nothing to MLflow")
    return parser.parse_args(argv)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def evaluate(model, loader, device) -> dict[str, float]:
    import torch
    from tqdm import tqdm

    from phiscale.train.module import topk_correct

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
    if not args.checkpoint.exists():
        raise PhiscaleError(f"checkpoint {args.checkpoint} does not exist; pass a .ckpt from <output_dir>/checkpoints/")
    import torch

    from phiscale.data import dataset_sources, make_val_loader
    from phiscale.models import build_model
    from phiscale.tracking import (
        RunRecord,
        check_reachable,
        log_evaluation,
        normalize_tracking_uri,
        tracking_dir,
    )
    from phiscale.train.plan import dataset_resolution, model_kwargs

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    config = ckpt.get("hyper_parameters", {}).get("run_config")
    if not config:
        raise PhiscaleError(f"{args.checkpoint} has no phiscale run config; was it written by phiscale-train?")
    data = dict(config["data"])
    model = build_model(config["model"]["name"], num_classes=int(data["num_classes"]), **model_kwargs(config["model"]))
    prefix = "ema.module." if args.ema else "model."
    weights = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    if not weights:
        raise PhiscaleError(f"{args.checkpoint} holds no {'EMA ' if args.ema else ''}weights; drop --ema")
    model.load_state_dict(weights)

    if args.loader:
        data["loader"] = args.loader
    if args.val_path:
        data["val_path"] = args.val_path
    _, val_source = dataset_sources(data)
    resolution = args.resolution or config.get("eval_resolution") or config.get("train_resolution")
    resolution = int(resolution or dataset_resolution(model.scale.resolution, int(data["base_resolution"])))
    loader = make_val_loader(
        val_source, loader=data["loader"], batch_size=args.batch_size, num_workers=args.num_workers,
        resolution=resolution, mean=data["mean"], std=data["std"], device=torch.device(args.device),
        crop_ratio=float(data["crop_ratio"]), num_classes=int(data["num_classes"]),
    )
    metrics = evaluate(model, loader, torch.device(args.device))
    print(f"{args.checkpoint}: top-1 {metrics['eval/top1']:.4f}  top-5 {metrics['eval/top5']:.4f}  "
          f"loss {metrics['eval/loss']:.4f}  ({int(metrics['eval/images'])} images at {resolution} px)")
    if args.no_log:
        return
    record = RunRecord.load(tracking_dir(args.checkpoint.resolve().parent.parent))
    if record is not None and record.run_id is None:
        record = None  # its run is not in MLflow yet (offline, or phiscale-sync pending): a new run
    uri = normalize_tracking_uri(args.tracking_uri or (record.tracking_uri if record else config["tracking"]["uri"]))
    check_reachable(uri, float(config["tracking"].get("connect_timeout_s", 10)))
    tags = {"eval_checkpoint": str(args.checkpoint.resolve()), "eval_weights": "ema" if args.ema else "model"}
    run_id = log_evaluation(
        uri, metrics, step=int(ckpt.get("global_step", 0)), run_id=record.run_id if record else None,
        experiment=config["tracking"]["experiment"], run_name=f"eval-{model.scale.name}", tags=tags,
    )
    print(f"logged to MLflow run {run_id} at {uri}")


if __name__ == "__main__":
    main()
