"""Training-loop overhead: phiscale (Lightning + MLflow logging + callbacks) vs a bare PyTorch loop.

Same model, optimiser, LR schedule, batch and in-memory data; both measured in this run,
alternating, several repeats; steps/s from the median. Prints the ratio last.
Goal: phiscale at most 5% slower than the bare loop, i.e. ratio >= 0.95.

    .venv/bin/python benchmarks/overhead.py [--model efficientnet_b0] [--resolution 64] [--steps 60]
    python benchmarks/overhead.py --device cuda --precision bf16-mixed --resolution 224 --batch-size 128
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as L
import torch
from torch import nn

from phiscale.models import build_model
from phiscale.train.callbacks import LastCheckpoint, SignalCheckpoint, ThroughputMonitor
from phiscale.train.module import ImageClassifier
from phiscale.train.optim import build_lr_schedule, build_optimizer

OPTIM = {
    "name": "rmsprop_tf", "lr_per_256": 0.016, "decay": 0.9, "momentum": 0.9, "eps": 1e-3,
    "weight_decay": 1e-5, "decoupled_decay": False, "warmup_epochs": 1, "warmup_lr_ratio": 0.0,
    "lr_decay_rate": 0.97, "lr_decay_epochs": 2.4, "label_smoothing": 0.1, "ema_decay": None,
    "ema_every_n_steps": 1,
}


class InMemory:
    """A fixed list of batches, iterated like a loader."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


class StepClock(L.Callback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()
        elif trainer.global_step == trainer.num_training_batches:
            sync(pl_module.device)
            self.end, self.steps = time.perf_counter(), trainer.global_step - self.warmup


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model: nn.Module, batches, warmup: int, precision: str) -> float:
    device = batches[0][0].device
    model = model.to(device, memory_format=torch.channels_last).train()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    optimizer = build_optimizer(OPTIM, model, global_batch_size=len(batches[0][1]))
    schedule = build_lr_schedule(OPTIM, optimizer, steps_per_epoch=len(batches), max_epochs=1)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    for step, (images, labels) in enumerate(batches, start=1):
        if step == warmup + 1:
            sync(device)
            start = time.perf_counter()
        with autocast:
            loss = criterion(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        _ = loss.detach()
    sync(device)
    return (len(batches) - warmup) / (time.perf_counter() - start)


def phiscale_loop(model: nn.Module, batches, warmup: int, workdir: Path, precision: str, mlflow: bool) -> float:
    module = ImageClassifier(model, optim_cfg=OPTIM, global_batch_size=len(batches[0][1]))
    ckpt_dir = workdir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    logger = False
    if mlflow:
        from phiscale.tracking import RunLogger

        logger = RunLogger(
            output_dir=workdir, tracking_uri=f"sqlite:///{workdir}/mlflow.db", experiment="overhead",
            run_name="bench", params={"bench": "overhead"}, tags={},
        )
        logger.open()  # as phiscale-train does, before fit: creating the store is not a step
    last = LastCheckpoint(ckpt_dir, every_n_steps=10**9)
    clock = StepClock(warmup)
    trainer = L.Trainer(
        accelerator="gpu" if batches[0][0].is_cuda else "cpu", devices=1, precision=precision,
        max_epochs=1, logger=logger, log_every_n_steps=10,
        callbacks=[ThroughputMonitor(10), last, SignalCheckpoint(last), clock],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=InMemory(batches))
    if logger:
        logger.close("finished", drain_timeout_s=60)
    return clock.steps / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="32-true", choices=("32-true", "bf16-mixed"))
    parser.add_argument("--no-mlflow", action="store_true", help="leave the MLflow logger out (no mlflow installed)")
    args = parser.parse_args()
    device = torch.device(args.device)

    torch.manual_seed(0)
    n, r = args.batch_size, args.resolution
    batches = [
        (torch.randn(n, 3, r, r, device=device).contiguous(memory_format=torch.channels_last),
         torch.randint(0, 10, (n,), device=device))
        for _ in range(args.steps)
    ]
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            # Alternate which loop goes first, so warm caches and clock drift favour neither.
            for which in ("bare", "phiscale") if repeat % 2 == 0 else ("phiscale", "bare"):
                torch.manual_seed(repeat)
                model = build_model(args.model, num_classes=10)
                if which == "bare":
                    bare.append(bare_loop(model, batches, args.warmup, args.precision))
                else:
                    ours.append(phiscale_loop(model, batches, args.warmup, Path(tmp) / str(repeat), args.precision,
                                              mlflow=not args.no_mlflow))
            print(f"repeat {repeat}: bare {bare[-1]:.2f} steps/s, phiscale {ours[-1]:.2f} steps/s")
    b, p = statistics.median(bare), statistics.median(ours)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model} @ {r}px, batch {n}, {args.precision}, {args.steps - args.warmup} timed steps x "
          f"{args.repeats} repeats, {where}")
    print(f"bare PyTorch loop: {b:.2f} steps/s ({b * n:.0f} images/s)")
    print(f"phiscale loop:     {p:.2f} steps/s ({p * n:.0f} images/s)")
    print(f"ratio phiscale/bare: {p / b:.3f}  (goal >= 0.95)")


if __name__ == "__main__":
    main()
