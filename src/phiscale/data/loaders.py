"""The two calls the trainer makes: pick the FFCV or the torch loader and check the arguments once."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path

import torch

from phiscale.data.batch_loader import DEFAULT_CROP_RATIO, BatchLoader, check_loader_args
from phiscale.errors import PhiscaleError

# data.loader -> the module that builds it; ffcv's is imported only on first use (it compiles numba code).
BACKENDS = {"ffcv": "phiscale.data.ffcv_loaders", "torch": "phiscale.data.torch_loaders"}
LOADERS = tuple(BACKENDS)


def _backend(loader: str):
    if loader not in BACKENDS:
        raise PhiscaleError(f"data.loader={loader!r} is not one of {', '.join(LOADERS)}")
    return importlib.import_module(BACKENDS[loader])


def make_train_loader(
    source: str | Path, *, loader: str = "ffcv", batch_size: int, num_workers: int, resolution: int,
    mean: Sequence[float], std: Sequence[float], device: torch.device | str, distributed: bool = False,
    seed: int = 0, order: str = "random", os_cache: bool = True, batches_ahead: int = 3,
    num_classes: int | None = None, min_crop_scale: float = 0.08, normalize: bool = True, flip_prob: float = 0.5,
) -> BatchLoader:
    """Train batches from `source` (a `.beton` for loader="ffcv", an ImageFolder for "torch"):
    random-resized-crop (area fraction in [min_crop_scale, 1]), flip (with probability flip_prob), normalise (mean/std in 0-255
    units), channels_last on `device`. With `normalize=False` the images stay uint8 (0-255), for
    batch augmentation on the device before normalising (phiscale.augment)."""
    check_loader_args(batch_size=batch_size, num_workers=num_workers, resolution=resolution, mean=mean,
                      std=std, order=order, min_crop_scale=min_crop_scale, flip_prob=flip_prob)
    return _backend(loader).create_train_loader(
        source, batch_size=int(batch_size), num_workers=int(num_workers), resolution=int(resolution),
        mean=[float(m) for m in mean], std=[float(s) for s in std], device=torch.device(device),
        distributed=distributed, seed=int(seed), order=order, os_cache=os_cache,
        batches_ahead=int(batches_ahead), num_classes=num_classes, min_crop_scale=float(min_crop_scale),
        normalize=bool(normalize), flip_prob=float(flip_prob),
    )


def make_val_loader(
    source: str | Path, *, loader: str = "ffcv", batch_size: int, num_workers: int, resolution: int,
    mean: Sequence[float], std: Sequence[float], device: torch.device | str, distributed: bool = False,
    crop_ratio: float = DEFAULT_CROP_RATIO, os_cache: bool = True, batches_ahead: int = 3,
    num_classes: int | None = None,
) -> BatchLoader:
    """Val batches: center crop (crop_ratio of the shorter side) at `resolution`, every sample once
    per epoch across all ranks, the last batch kept."""
    check_loader_args(batch_size=batch_size, num_workers=num_workers, resolution=resolution, mean=mean,
                      std=std, crop_ratio=crop_ratio)
    return _backend(loader).create_val_loader(
        source, batch_size=int(batch_size), num_workers=int(num_workers), resolution=int(resolution),
        mean=[float(m) for m in mean], std=[float(s) for s in std], device=torch.device(device),
        distributed=distributed, crop_ratio=float(crop_ratio), os_cache=os_cache,
        batches_ahead=int(batches_ahead), num_classes=num_classes,
    )
