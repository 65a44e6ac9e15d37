"""Room on disk for a run's checkpoints: the estimate said before the first step, the figures when a
write does not fit.

A checkpoint file is written beside the one it replaces and renamed over it (`checkpoint_io`), so
while a new `last.ckpt` is written the checkpoint dir holds the old one, its temporary and
`best.ckpt`: three checkpoints. Their size is the module's tensors (the network, its EMA) and the
optimizer's state, which most optimizers create at their first step, so it is estimated from the
parameters and a table of each optimizer's state per parameter.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from phiscale.errors import DiskFull, disk_full_errno, size_text
from phiscale.paths import free_bytes

# What the checkpoint dir holds at most while last.ckpt is rewritten (DeepSpeed writes its
# directories in place: no temporary, and no estimate here, its shards are laid out otherwise).
ROOM = ("last.ckpt", "its temporary", "best.ckpt")
ROOM_TEXT = f"{', '.join(ROOM[:-1])} and {ROOM[-1]}"

# Optimizer class name -> how many tensors the size of each parameter it keeps, from the parameter's
# group (torch.optim docs: SGD momentum_buffer; Adam/AdamW exp_avg, exp_avg_sq, max_exp_avg_sq with
# amsgrad; RMSprop square_avg, momentum_buffer, grad_avg when centered; phiscale's RMSpropTF:
# square_avg and momentum_buffer, train/optim.py).
STATE_PER_PARAM: dict[str, Callable[[Mapping[str, Any]], int]] = {
    "SGD": lambda g: int(g.get("momentum", 0) > 0),
    "RMSpropTF": lambda g: 1 + int(g.get("momentum", 0) > 0),
    "RMSprop": lambda g: 1 + int(g.get("momentum", 0) > 0) + int(bool(g.get("centered"))),
    "Adam": lambda g: 2 + int(bool(g.get("amsgrad"))),
    "AdamW": lambda g: 2 + int(bool(g.get("amsgrad"))),
}
UNKNOWN_STATE_PER_PARAM = 2  # an optimizer not in the table: as much as Adam's
# torch.save's zip and pickle around the tensors: per tensor a zip record, its key and its place in the
# pickle; and the run config, loops and callback states. Fitted to the FAST network's checkpoints
# (mobilenet_v3_small, width 0.5) with SGD (188 KB beside 3.30 MB of tensors, 630 tensors) and with
# RMSpropTF + EMA (314 KB beside 6.60 MB, 1158): tests/train/test_disk_room.py holds it to 2%.
PER_TENSOR_BYTES = 240
FIXED_BYTES = 40 * 1024


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """What torch.save writes for `tensors`: each storage once, whole (a LightningModule's state dict
    names the network's tensors twice, as `model.` and as its forward's, one storage each)."""
    storages = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[int, int]:
    """(bytes, tensors) of the optimizer's state as a checkpoint holds it: counted once it exists (a
    resumed run), else estimated from its parameters with STATE_PER_PARAM."""
    if optimizer.state:
        tensors = [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
        return tensor_bytes(tensors), len(tensors)
    per_param = STATE_PER_PARAM.get(type(optimizer).__name__, lambda g: UNKNOWN_STATE_PER_PARAM)
    counts = [(per_param(group), group["params"]) for group in optimizer.param_groups]
    return sum(n * tensor_bytes(params) for n, params in counts), sum(n * len(params) for n, params in counts)


def checkpoint_bytes(module: torch.nn.Module, optimizers: Iterable[torch.optim.Optimizer]) -> int:
    """The estimated size of one checkpoint file of `module` trained by `optimizers`."""
    state = module.state_dict()
    sizes = [(tensor_bytes(state.values()), len(state)), *map(optimizer_state, optimizers)]
    return sum(b for b, _ in sizes) + PER_TENSOR_BYTES * sum(n for _, n in sizes) + FIXED_BYTES


def room_warning(ckpt_dir: Path, size: int, free: int) -> str | None:
    """One line when `ckpt_dir` cannot hold ROOM checkpoints of `size` bytes (what it holds of them
    already counts), else None."""
    held = sum(p.stat().st_size for p in (ckpt_dir / ROOM[0], ckpt_dir / ROOM[-1]) if p.is_file())
    more = len(ROOM) * size - held
    if free >= more:
        return None
    return (f"phiscale: warning: {ckpt_dir} has {size_text(free)} free and this run's checkpoints need "
            f"{size_text(more)} more ({ROOM_TEXT}, about {size_text(size)} each); training goes on, but a "
            f"checkpoint write will fail: free space there, or set paths.output_dir to a larger disk")


class CheckpointRoom(L.Callback):
    """Rank 0, before the first step: the warning of `room_warning`, if any (the optimizer exists
    now, and a resumed run's state is loaded)."""

    def __init__(self, ckpt_dir: Path, print_fn=print) -> None:
        self.ckpt_dir, self.print = Path(ckpt_dir), print_fn

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        size = checkpoint_bytes(pl_module, trainer.optimizers)
        if (line := room_warning(self.ckpt_dir, size, free_bytes(self.ckpt_dir))) is not None:
            self.print(line, flush=True)


# ---------------------------------------------------------------- a write that did not fit -----
class _Counter:
    """A file that only counts what is written to it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def serialized_bytes(obj: Any) -> int:
    """How many bytes torch.save writes for `obj` (serialized into a counter: no disk, no copy)."""
    counter = _Counter()
    torch.save(obj, counter)
    return counter.size


def checkpoint_disk_full(err: BaseException, path: Path, checkpoint: Mapping[str, Any]) -> DiskFull | None:
    """DiskFull for a checkpoint write to `path` that failed with `err` (its temporary already
    removed), or None when the disk is not why. A full disk is the error's errno, however torch
    wraps it; or, when no errno says so (a file system that reports it otherwise), a write whose
    checkpoint is larger than the room left."""
    code = disk_full_errno(err)
    if code is None and not isinstance(err, OSError | RuntimeError):
        return None
    try:
        needed = serialized_bytes(checkpoint)
    except Exception:  # noqa: BLE001 (the checkpoint itself cannot be written: not the disk's fault)
        return None
    free = free_bytes(path.parent)
    if code is None and needed <= free:
        return None
    room = f"this run's checkpoints need {size_text(len(ROOM) * needed)} there ({ROOM_TEXT}, {size_text(needed)} each)"
    return DiskFull(f"writing {path.name}", path.parent, needed, free, code=code or errno.ENOSPC, notes=(room,))
