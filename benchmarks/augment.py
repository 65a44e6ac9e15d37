"""Cost of batch augmentation per batch, as a fraction of one efficientnet_b0 training step.

Both measured in this run, on the same device, batch size and resolution: BatchAugment on a uint8
batch (each policy, with and without mixing), and one training step of efficientnet_b0 (forward,
backward, SGD step) on random data, channels_last. The step and every row are timed in turn
within each repeat, so load from other processes falls on all of them alike; medians over repeats.
Prints a table policy | ms per batch | step ms | fraction.

    python benchmarks/augment.py --device cuda                       # B0 at 224, batch 128
    python benchmarks/augment.py --device cpu --quick                # about a minute on 2 cores
    python benchmarks/augment.py --device cpu --batch 32 --resolution 160
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from phiscale.augment import BatchAugment
from phiscale.models import build_model

NUM_CLASSES = 1000
# (row label, BatchAugment settings). RandAugment at N=2, M=9 (arXiv 1909.13719, ResNet-50 on ImageNet).
CONFIGS = [
    ("none", {"policy": "none"}),
    ("autoaugment", {"policy": "autoaugment"}),
    ("randaugment", {"policy": "randaugment", "num_ops": 2, "magnitude": 9, "magnitude_std": 0.5}),
    ("randaugment+mixup", {"policy": "randaugment", "magnitude": 9, "magnitude_std": 0.5, "mixup": 0.2}),
    ("randaugment+mix+cutmix+erasing", {"policy": "randaugment", "magnitude": 9, "magnitude_std": 0.5,
                                        "mixup": 0.8, "cutmix": 1.0, "erasing": 0.25}),
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - start) * 1000


def interleaved_medians(fns: dict[str, Callable[[], object]], device: torch.device, warmup: int,
                        repeats: int) -> dict[str, float]:
    """Median ms of each function, timing them one after the other within every repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed_ms(fn, device))
    return {name: statistics.median(values) for name, values in times.items()}


def training_step(device: torch.device, batch: int, resolution: int, precision: str) -> Callable[[], object]:
    """One efficientnet_b0 step (forward + backward + SGD) on a fixed random batch."""
    model = build_model("efficientnet_b0", num_classes=NUM_CLASSES).to(device, memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            loss = criterion(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=None, help="default 128 (32 with --quick)")
    parser.add_argument("--resolution", type=int, default=None, help="default 224 (160 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 10, 5 with --quick)")
    parser.add_argument("--precision", default=None, choices=("32", "bf16"),
                        help="training step precision (default bf16 on cuda, 32 on cpu)")
    parser.add_argument("--quick", action="store_true", help="small defaults for a CPU run of about a minute")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (32 if args.quick else 128)
    resolution = args.resolution or (160 if args.quick else 224)
    repeats = args.repeats or (5 if args.quick else 10)
    precision = args.precision or ("bf16" if device.type == "cuda" else "32")

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, resolution, resolution), dtype=torch.uint8, generator=g)
    images = images.to(device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, NUM_CLASSES, (batch,), generator=g).to(device)

    fns: dict[str, Callable[[], object]] = {"step": training_step(device, batch, resolution, precision)}
    for label, settings in CONFIGS:
        augment = BatchAugment(num_classes=NUM_CLASSES, label_smoothing=0.1, seed=0, **settings)
        fns[label] = lambda a=augment: a(images, labels)
    medians = interleaved_medians(fns, device, warmup=2, repeats=repeats)
    step_ms = medians.pop("step")
    rows = list(medians.items())

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"efficientnet_b0 step vs BatchAugment: batch {batch} @ {resolution}px, {where}, "
          f"step precision {precision}, median of {repeats}")
    print(f"{'policy':32s} | {'ms per batch':>12s} | {'step ms':>9s} | {'fraction':>8s}")
    for label, ms in rows:
        print(f"{label:32s} | {ms:12.2f} | {step_ms:9.1f} | {ms / step_ms:8.3f}")


if __name__ == "__main__":
    main()
