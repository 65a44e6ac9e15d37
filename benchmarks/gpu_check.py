"""One GPU check: DeepSpeed ZeRO-2 bf16 vs plain DDP training of efficientnet_b0 at 224, same card.

Synthetic batches that live on the GPU (no data loading), the same model, optimizer (SGD with
Nesterov momentum) and batch size on both sides; each side warms up first (cuDNN autotuning,
allocator, DeepSpeed's buffers) and only then is timed. Prints images/s, step time, peak memory
and model FLOPs utilisation per side, and the DeepSpeed/DDP throughput ratio last.

    .venv/bin/python benchmarks/gpu_check.py [--batch-size 128] [--steps 50] [--warmup 15]

One process, world size 1 (RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1, a free MASTER_PORT):
  - DDP: torch.distributed nccl + DistributedDataParallel, fp32 weights, bf16 autocast,
    channels_last;
  - DeepSpeed: raw deepspeed.initialize with phiscale's ZeRO-2 config (bf16 weights and
    activations, fp32 master weights in the optimizer), NCHW (DeepSpeed cannot take
    channels_last weights, see run_deepspeed).
MFU = 3 x 2 x MACs per image x images/s / the card's peak dense bf16 FLOP/s (forward = 2 FLOPs
per multiply-add, backward ~ 2 x forward; MACs counted by phiscale.models.profile at this resolution).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from dataclasses import dataclass

from phiscale.errors import PhiscaleError, user_errors_as_one_line

# Peak dense BF16 tensor-core FLOP/s by card name (NVIDIA datasheets quote "with sparsity", twice
# these). H100 SXM: 1,979 TFLOPS sparse -> 989 dense; H100 PCIe 1,513 -> 756; H100 NVL 1,671 -> 835
# (NVIDIA H100 Tensor Core GPU datasheet, nvidia.com/en-us/data-center/h100/). H200 (SXM and NVL
# quote 1,979 / 1,671 sparse): same tensor cores as H100 (nvidia.com/en-us/data-center/h200/).
# A100: 312 dense (NVIDIA A100 datasheet). First match wins, so specific names come first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H200 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("A100", 312e12),
)


def peak_bf16_flops(device_name: str) -> float | None:
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


@dataclass
class Result:
    name: str
    images_per_s: float
    step_ms: float
    peak_mem_gib: float
    final_loss: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py",
        description="DeepSpeed ZeRO-2 bf16 vs DDP (bf16 autocast) training throughput on one CUDA GPU.",
    )
    parser.add_argument(
        "--model", default="efficientnet_b0", help="a phiscale model name (default efficientnet_b0)"
    )
    parser.add_argument("--resolution", type=int, default=224, help="input size (default 224)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per side (default 50)")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps per side first (default 15)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument(
        "--cpu-dry-run", action="store_true",
        help="exercise this script without a GPU (CPU, gloo, tiny batch and resolution; numbers meaningless)",
    )  # fmt: skip
    parser.add_argument(
        "--peak-tflops", type=float, default=None,
        help="the card's dense bf16 peak in TFLOP/s, for cards not in the built-in table",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for key in ("resolution", "batch_size", "steps"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise PhiscaleError(
            f"no CUDA device visible (torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
            "run this on a GPU machine with a CUDA build of torch"
        )
    if not torch.cuda.is_bf16_supported():
        raise PhiscaleError(
            f"{torch.cuda.get_device_name(0)} has no bf16 support; this check needs Ampere or newer"
        )
    return torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_loop(name, step, batch_size, steps, warmup) -> Result:
    import torch

    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - start
    return Result(
        name=name,
        images_per_s=batch_size * steps / elapsed,
        step_ms=1000 * elapsed / steps,
        peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        final_loss=float(loss),
    )


def run_ddp(args, make_model, x, y) -> Result:
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model().to(x.device, memory_format=torch.channels_last)
    ddp = DDP(model, device_ids=[0] if x.is_cuda else None)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            loss = loss_fn(ddp(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return timed_loop("DDP, bf16 autocast", step, args.batch_size, args.steps, args.warmup)


def run_deepspeed(args, make_model, x, y) -> Result:
    import deepspeed
    import torch

    from phiscale.train.deepspeed import deepspeed_config

    # NCHW: deepspeed.initialize broadcasts each parameter as `p.data.view(torch.uint8)`, which
    # fails on channels_last conv weights ("self.stride(-1) must be 1"), so no channels_last here.
    model = make_model().to(x.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    config = deepspeed_config({"stage": 2}, micro_batch_size=args.batch_size, precision="bf16-mixed")
    engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
    xb = x.to(torch.bfloat16).contiguous()
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(engine(xb).float(), y)
        engine.backward(loss)
        engine.step()
        return loss.detach()

    result = timed_loop("DeepSpeed ZeRO-2, bf16", step, args.batch_size, args.steps, args.warmup)
    if hasattr(engine, "destroy"):
        engine.destroy()
    return result


@user_errors_as_one_line
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cpu_dry_run:
        import torch

        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        args.resolution, args.batch_size, args.steps, args.warmup = 32, 4, 2, 1
        device = torch.device("cpu")
    else:
        torch = require_cuda()
        device = torch.device("cuda", 0)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    import torch.distributed as dist

    import phiscale.train.deepspeed  # noqa: F401  (TORCH_EXTENSIONS_DIR before DeepSpeed builds an op)
    from phiscale.models import build_model
    from phiscale.models.profile import count_macs

    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        dist.init_process_group("nccl", device_id=device)
        name = torch.cuda.get_device_name(device)
    else:
        dist.init_process_group("gloo")
        name = "CPU (dry run)"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_bf16_flops(name)

    def make_model():
        torch.manual_seed(0)
        return build_model(args.model, num_classes=args.num_classes)

    macs = count_macs(make_model().eval(), args.resolution)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device=device, generator=gen)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.num_classes, (args.batch_size,), device=device, generator=gen)

    import deepspeed

    started = time.perf_counter()
    results = [run_ddp(args, make_model, x, y)]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results.append(run_deepspeed(args, make_model, x, y))
    total = time.perf_counter() - started
    dist.destroy_process_group()

    print(
        f"\ngpu_check: {name}; torch {torch.__version__} (CUDA {torch.version.cuda}), deepspeed {deepspeed.__version__}; "
        f"{args.model} @ {args.resolution}, {macs / 1e6:.0f} MMACs/image, batch {args.batch_size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up per side ({total:.0f} s both sides)"
    )
    peak_note = f"{peak / 1e12:.0f} TFLOP/s bf16 dense peak" if peak else "unknown card: pass --peak-tflops"
    print(f"MFU = 3 x 2 x MACs x images/s / {peak_note}\n")
    print(
        f"| {'setup':<24} | {'images/s':>9} | {'step ms':>8} | {'peak GiB':>8} | {'MFU':>6} | {'loss':>6} |"
    )
    print(f"|{'-' * 26}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 8}|")
    for r in results:
        mfu = f"{100 * 6 * macs * r.images_per_s / peak:5.1f}%" if peak else "   n/a"
        print(
            f"| {r.name:<24} | {r.images_per_s:9.0f} | {r.step_ms:8.1f} | {r.peak_mem_gib:8.2f} | {mfu:>6} "
            f"| {r.final_loss:6.3f} |"
        )
    ddp, ds = results
    print(f"\nDeepSpeed/DDP images/s ratio: {ds.images_per_s / ddp.images_per_s:.3f}")


if __name__ == "__main__":
    sys.exit(main())
