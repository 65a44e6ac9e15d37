"""Plain PyTorch loaders over an ImageFolder (PIL decode, the FFCV augmentations re-done in numpy/PIL,
no torchvision): `data.loader=torch`, for machines without FFCV and as the benchmark's baseline."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from phiscale.data.batch_loader import (
    CUDA_IMAGE_DTYPE,
    DEFAULT_CROP_RATIO,
    Normalize,
    batches_left,
    epoch_order,
    rank_and_world_size,
    val_shard,
)
from phiscale.data.imagefolder import ImageFolderIndex, scan_image_folder
from phiscale.errors import PhiscaleError

# Inception-style crop (Szegedy et al. 2015), as torchvision's RandomResizedCrop and FFCV's decoder.
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int,
                            scale=CROP_SCALE, ratio=CROP_RATIO) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a crop with a random area fraction and aspect ratio; after 10 misses, the
    center crop clamped to `ratio` (torchvision's `RandomResizedCrop.get_params`)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def center_crop(img: Image.Image, resolution: int, crop_ratio: float) -> Image.Image:
    """Resize the shorter side to resolution / crop_ratio, then take the center resolution^2
    (torchvision's Resize(int(res / ratio)) + CenterCrop(res))."""
    short = int(resolution / crop_ratio)
    width, height = img.size
    if width <= height:
        size = (short, int(short * height / width))
    else:
        size = (int(short * width / height), short)
    img = img.resize(size, Image.BILINEAR)
    left, top = round((size[0] - resolution) / 2.0), round((size[1] - resolution) / 2.0)
    return img.crop((left, top, left + resolution, top + resolution))


class ImageFolderSamples(Dataset):
    """(uint8 HWC tensor, label) per index; a crop's randomness depends only on (seed, epoch, index),
    so an epoch is the same whatever worker decodes it and whether or not the run was resumed."""

    def __init__(self, index: ImageFolderIndex, *, train: bool, resolution: int, crop_ratio: float, seed: int,
                 min_crop_scale: float = CROP_SCALE[0], flip_prob: float = 0.5):
        self.samples, self.train, self.resolution = index.samples, train, resolution
        self.crop_scale, self.flip_prob = (float(min_crop_scale), 1.0), float(flip_prob)
        self.crop_ratio, self.seed, self.epoch = crop_ratio, seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as f:
                img = f.convert("RGB")
        except Exception as err:  # noqa: BLE001 - PIL raises many types for a bad file
            raise PhiscaleError(f"{str(path)!r} is not a readable image ({err}): remove or replace it") from err
        res = self.resolution
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            left, top, w, h = random_resized_crop_box(rng, *img.size, scale=self.crop_scale)
            img = img.resize((res, res), Image.BILINEAR, box=(left, top, left + w, top + h))
            if rng.random() < self.flip_prob:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = center_crop(img, res, self.crop_ratio)
        return torch.from_numpy(np.asarray(img).copy()), label


class TorchBatchLoader:
    """A DataLoader over `ImageFolderSamples` as a `BatchLoader`; normalises on the device.
    `order_fn(epoch, start)` gives this rank's sample indices of an epoch begun at global position
    `start` (a train loader's `epoch_order`; val ignores `start`)."""

    def __init__(self, dataset: ImageFolderSamples, order_fn, *, batch_size: int, num_workers: int,
                 device: torch.device, mean: Sequence[float], std: Sequence[float], drop_last: bool,
                 batches_ahead: int, num_samples: int, normalize: bool = True, world_size: int = 1):
        self.dataset, self._order_fn, self.device = dataset, order_fn, device
        self.batch_size, self.num_workers, self.drop_last = batch_size, num_workers, drop_last
        self.batches_ahead, self.num_samples, self.next_epoch = batches_ahead, num_samples, 0
        self.global_batch_size, self._start = world_size * batch_size, 0
        dtype = CUDA_IMAGE_DTYPE if device.type == "cuda" else torch.float32
        self._normalize = Normalize(mean, std, device, dtype) if normalize else None

    def __len__(self) -> int:
        return self.num_samples // self.batch_size if self.drop_last else -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.next_epoch = int(epoch)

    def set_resolution(self, resolution: int) -> None:
        if not self.dataset.train:
            raise PhiscaleError("set_resolution is for train loaders: build a new val loader for another resolution")
        self.dataset.resolution = int(resolution)  # workers are forked per epoch, so the next epoch sees it

    def start_epoch_at(self, samples_done: int) -> int:
        if not self.dataset.train:
            raise PhiscaleError("start_epoch_at is for train loaders: a val epoch always reads every sample")
        self._start = int(samples_done)
        return batches_left(len(self.dataset), self._start, self.global_batch_size // self.batch_size,
                            self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.next_epoch = self.next_epoch, self.next_epoch + 1
        start, self._start = self._start, 0  # a resumed epoch's place: that epoch only
        self.dataset.epoch = epoch
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=self._order_fn(epoch, start).tolist(),
            num_workers=self.num_workers, drop_last=self.drop_last, pin_memory=self.device.type == "cuda",
            prefetch_factor=self.batches_ahead if self.num_workers > 0 else None,
        )
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # NHWC = channels_last
            images = self._normalize(images) if self._normalize else images
            yield images, labels.to(self.device, non_blocking=True)


def _open(source: str | Path, num_classes: int | None) -> ImageFolderIndex:
    if Path(source).suffix == ".beton":
        raise PhiscaleError(f"{str(source)!r} is a .beton: data.loader=torch reads an ImageFolder; use data.loader=ffcv")
    index = scan_image_folder(source)
    if num_classes is not None and len(index.classes) > num_classes:
        raise PhiscaleError(
            f"ImageFolder {str(index.root)!r} has {len(index.classes)} classes but num_classes={num_classes}: "
            f"set data.num_classes={len(index.classes)} (or more)"
        )
    return index


def create_train_loader(
    source: str | Path, *, batch_size: int, num_workers: int, resolution: int, mean: Sequence[float],
    std: Sequence[float], device: torch.device, distributed: bool = False, seed: int = 0,
    order: str = "random", os_cache: bool = True, batches_ahead: int = 3, num_classes: int | None = None,
    min_crop_scale: float = CROP_SCALE[0], normalize: bool = True, flip_prob: float = 0.5,
) -> TorchBatchLoader:
    """Random-resized-crop + flip, in the epoch order `batch_loader.epoch_order` gives (one seeded
    permutation per epoch, strided across ranks, the same at any world size, the tail short of a
    global batch dropped). `order` and `os_cache` are FFCV settings: quasi_random is a plain random
    order here."""
    index = _open(source, num_classes)
    rank, world = rank_and_world_size(distributed)
    n = len(index)

    def order_fn(epoch: int, start: int = 0) -> np.ndarray:
        return epoch_order(n, seed=seed, epoch=epoch, rank=rank, world_size=world, batch_size=batch_size,
                           start=start)

    dataset = ImageFolderSamples(index, train=True, resolution=resolution, crop_ratio=1.0, seed=seed,
                                 min_crop_scale=min_crop_scale, flip_prob=flip_prob)
    return TorchBatchLoader(dataset, order_fn, batch_size=batch_size, num_workers=num_workers, device=device,
                            mean=mean, std=std, drop_last=True, batches_ahead=batches_ahead, num_samples=n // world,
                            normalize=normalize, world_size=world)


def create_val_loader(
    source: str | Path, *, batch_size: int, num_workers: int, resolution: int, mean: Sequence[float],
    std: Sequence[float], device: torch.device, distributed: bool = False, crop_ratio: float = DEFAULT_CROP_RATIO,
    os_cache: bool = True, batches_ahead: int = 3, num_classes: int | None = None,
) -> TorchBatchLoader:
    """Center crop at `resolution`, in file order; with `distributed`, every sample once across ranks."""
    index = _open(source, num_classes)
    rank, world = rank_and_world_size(distributed)
    shard = val_shard(len(index), rank, world).astype(np.int64)
    dataset = ImageFolderSamples(index, train=False, resolution=resolution, crop_ratio=crop_ratio, seed=0)
    return TorchBatchLoader(dataset, lambda epoch, start=0: shard, batch_size=batch_size, num_workers=num_workers,
                            device=device, mean=mean, std=std, drop_last=False, batches_ahead=batches_ahead,
                            num_samples=len(shard))
