"""What the trainer iterates (`BatchLoader`), and the pieces both loaders share: argument checks,
rank sharding and on-device normalisation."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from phiscale.errors import PhiscaleError

ORDERS = ("random", "quasi_random")
# On CUDA images arrive as uint8 and are normalised on the GPU to fp16, as ffcv-imagenet does
# (train under autocast: precision 16-mixed / bf16-mixed); on CPU they are float32.
CUDA_IMAGE_DTYPE = torch.float16
# Validation resizes to side/ratio and center-crops `side`: ImageNet's 224-of-256 (Krizhevsky et al. 2012).
DEFAULT_CROP_RATIO = 0.875


@runtime_checkable
class BatchLoader(Protocol):
    """Batches of (images float [N,3,H,W] channels_last on the device, labels int64 [N]).

    FFCV reuses its batch buffers: clone a batch you keep past the next step.
    """

    num_samples: int  # samples this rank reads per epoch (before a train loader drops its last batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def __len__(self) -> int: ...  # batches per epoch on this rank

    def set_epoch(self, epoch: int) -> None: ...  # the order of epoch e is the same in a resumed run

    def set_resolution(self, resolution: int) -> None: ...  # progressive resizing (train loaders)

    # Train loaders: samples one batch of every rank covers (ranks x batch size), and a mid-epoch
    # resume at any world size: the next epoch skips the first `samples_done` of its global order
    # (`epoch_order`); returns the batches this rank then reads.
    global_batch_size: int

    def start_epoch_at(self, samples_done: int) -> int: ...


def check_loader_args(
    *, batch_size: int, num_workers: int, resolution: int, mean: Sequence[float], std: Sequence[float],
    order: str = "random", crop_ratio: float = DEFAULT_CROP_RATIO, min_crop_scale: float = 0.08,
    flip_prob: float = 0.5,
) -> None:
    """Reject values that would otherwise fail deep inside FFCV, numba or a DataLoader worker."""
    if int(batch_size) < 1:
        raise PhiscaleError(f"data.batch_size={batch_size} must be >= 1 (per device), e.g. 64")
    if int(num_workers) < 0:
        raise PhiscaleError(f"data.num_workers={num_workers} must be >= 0, e.g. the CPU cores per device")
    if int(resolution) < 8:
        raise PhiscaleError(f"resolution={resolution} is too small: use at least 8 pixels")
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != 3:
            raise PhiscaleError(f"data.{name}={list(values)} needs 3 values (R, G, B in 0-255 units)")
    if min(std) <= 0:
        raise PhiscaleError(f"data.std={list(std)} must be positive (0-255 units, ImageNet: 58.4, 57.1, 57.4)")
    if max(mean) <= 1.0 and max(std) <= 1.0:
        raise PhiscaleError(
            f"data.mean={list(mean)} / data.std={list(std)} look like 0-1 units: give them in 0-255 units "
            "(ImageNet: 123.7, 116.3, 103.5 / 58.4, 57.1, 57.4)"
        )
    if order not in ORDERS:
        raise PhiscaleError(f"data.order={order!r} is not one of {', '.join(ORDERS)}")
    if not 0.0 < float(min_crop_scale) <= 1.0:
        raise PhiscaleError(f"data.min_crop_scale={min_crop_scale} must be in (0, 1]; ImageNet uses 0.08")
    if not 0.0 <= float(flip_prob) <= 1.0:
        raise PhiscaleError(f"data.flip_prob={flip_prob} must be in [0, 1]: 0.5 for photos, 0 for digits and text")
    if not 0.0 < crop_ratio <= 1.0:
        raise PhiscaleError(f"data.crop_ratio={crop_ratio} must be in (0, 1], e.g. 0.875 (224/256)")


def rank_and_world_size(distributed: bool) -> tuple[int, int]:
    """(rank, world size) from torch.distributed when `distributed`, else (0, 1)."""
    if not distributed:
        return 0, 1
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise PhiscaleError(
            "distributed=True but torch.distributed is not initialised: create the loaders in the "
            "DataModule's setup/*_dataloader hooks (after the strategy starts), or pass distributed=False"
        )
    return torch.distributed.get_rank(), torch.distributed.get_world_size()


def epoch_order(num_samples: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
                batch_size: int = 1, start: int = 0) -> np.ndarray:
    """This rank's train samples of one epoch, in order. The epoch's order is one permutation of all
    samples per (seed, epoch) whatever the world size (NumPy's `default_rng(seed + epoch)`: the
    single-rank order FFCV and the torch loader always had); from its position `start` on (what a
    resumed epoch has left), cut to whole global batches of world_size x batch_size, rank r takes
    positions r, r+W, r+2W, ... So after k steps of every rank the epoch has consumed exactly its
    first start + k*W*B positions: a resume at another world size splits the rest, and no sample is
    seen twice within the epoch (the tail short of a global batch is dropped, nothing is padded)."""
    order = np.random.default_rng(int(seed) + int(epoch)).permutation(int(num_samples))[int(start):]
    step = int(world_size) * int(batch_size)
    return order[: len(order) // step * step][int(rank)::int(world_size)]


def batches_left(num_samples: int, start: int, world_size: int, batch_size: int) -> int:
    """Batches each rank reads of an epoch resumed at global position `start` (`epoch_order`)."""
    return max(int(num_samples) - int(start), 0) // (int(world_size) * int(batch_size))


def val_shard(num_samples: int, rank: int, world_size: int) -> np.ndarray:
    """Rank r evaluates samples r, r+W, r+2W, ...: every sample exactly once across ranks, no padding
    (so ranks may differ by one sample, and by one batch)."""
    return np.arange(rank, num_samples, world_size, dtype=np.uint64)


class Normalize:
    """uint8 images [N,3,H,W] (any layout) -> (x - mean) / std in `dtype`, channels_last, on their device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, dtype: torch.dtype):
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(mean, dtype=dtype, device=device).view(shape)
        self.inv_std = (1.0 / torch.tensor(std, dtype=torch.float64)).to(dtype=dtype, device=device).view(shape)
        self.dtype = dtype

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.contiguous(memory_format=torch.channels_last).to(self.dtype)
        return images.sub_(self.mean).mul_(self.inv_std)
