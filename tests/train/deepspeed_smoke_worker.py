"""One rank of the CPU DeepSpeed smoke run (started twice by test_deepspeed.py, gloo backend).

For each ZeRO stage: deepspeed.initialize a tiny classifier with phiscale's config, take a few
optimizer steps on a fixed batch, then save the sharded checkpoint. Stage 2 saves the way raw
DeepSpeed does (`<dir>/global_stepN/`); stage 3 the way Lightning does (`last.ckpt/checkpoint/`,
the module wrapped as `_forward_module`). Rank 0 writes the losses to `<out>/losses.json`.

    RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 python deepspeed_smoke_worker.py OUT 1,2,3
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("LOCAL_RANK", os.environ.get("RANK", "0"))

import deepspeed  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from phiscale.train.deepspeed import deepspeed_config  # noqa: E402  (sets TORCH_EXTENSIONS_DIR)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    # BatchNorm as in the real CNNs: its fp32 buffers beside bf16 weights once broke DeepSpeed bf16.
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(32, 8, generator=gen)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0).long()


class LightningLikeWrapper(nn.Module):
    """Lightning's DeepSpeed engine wraps the LightningModule as `_forward_module`."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self._forward_module = net

    def forward(self, x):
        return self._forward_module(x)


def run_stage(stage: int, out: Path, steps: int = 8) -> list[float]:
    net = make_net()
    lightning_layout = stage == 3
    model = LightningLikeWrapper(net) if lightning_layout else net
    config = deepspeed_config({"stage": stage}, micro_batch_size=16, precision="bf16-mixed", grad_clip=1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    x, y = batch()
    rank = int(os.environ["RANK"])
    x, y = x[rank * 16 : (rank + 1) * 16], y[rank * 16 : (rank + 1) * 16]  # each rank its half
    losses = []
    for _ in range(steps):
        loss = nn.functional.cross_entropy(engine(x.to(torch.bfloat16)).float(), y)
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    if lightning_layout:
        engine.save_checkpoint(
            str(out / "stage3" / "last.ckpt"),
            tag="checkpoint",
            client_state={"epoch": 0, "global_step": steps},
        )
    else:
        engine.save_checkpoint(str(out / f"stage{stage}"))
    if hasattr(engine, "destroy"):
        engine.destroy()
    return losses


def main() -> None:
    out, stages = Path(sys.argv[1]), [int(s) for s in sys.argv[2].split(",")]
    deepspeed.init_distributed(dist_backend="gloo")
    losses = {stage: run_stage(stage, out) for stage in stages}
    if int(os.environ["RANK"]) == 0:
        (out / "losses.json").write_text(json.dumps(losses))
    # Leave without finalizing Python. A gloo worker thread can drop its last finished work (a
    # barrier holding an allgather's tensors) while the interpreter finalizes; the drop takes the
    # GIL, the finalizing interpreter ends that thread mid-destructor, and libstdc++ aborts with
    # "terminate called without an active exception" (torch 2.13, about 1 exit in 8 on 2 busy cores;
    # core dump: ProcessGroupGloo::runLoop -> ~AsyncBarrierWork -> decref -> pthread_exit).
    # destroy_process_group cannot join those threads first: DeepSpeed keeps the groups alive
    # (deepspeed.utils.groups, the ZeRO engines). Everything this rank writes is closed on disk here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
