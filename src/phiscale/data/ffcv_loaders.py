"""FFCV loaders, after ffcv-imagenet's `train_imagenet.py`: the train and val pipelines are the two
functions below. Importing this module imports ffcv (seconds): `phiscale.data` only does it on demand.

Device-specific order (ffcv 1.0.2):
- CUDA: decode + crop + flip (seeded: phiscale.data.ffcv_seeded) -> ToTensor -> ToDevice -> ToTorchImage, then normalise on the GPU to fp16
  (uint8 crosses PCIe; ffcv's own GPU NormalizeImage needs cupy, so phiscale normalises in torch).
- CPU: decode + crop + flip -> NormalizeImage(float32) -> ToTensor -> ToDevice(torch.device) -> ToTorchImage;
  the CUDA order makes `Loader()` spin forever on CPU (ffcv issue 396).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from phiscale.data.batch_loader import (
    CUDA_IMAGE_DTYPE,
    DEFAULT_CROP_RATIO,
    Normalize,
    batches_left,
    epoch_order,
    rank_and_world_size,
    val_shard,
)
from phiscale.data.beton_file import BetonInfo, check_beton
from phiscale.data.numba_cache import import_ffcv, quiet_uncacheable_warnings
from phiscale.errors import PhiscaleError

ffcv = import_ffcv()
from ffcv.fields.basics import IntDecoder  # noqa: E402
from ffcv.fields.rgb_image import CenterCropRGBImageDecoder  # noqa: E402
from ffcv.loader import Loader, OrderOption  # noqa: E402
from ffcv.transforms import NormalizeImage, Squeeze, ToDevice, ToTensor, ToTorchImage  # noqa: E402
from ffcv.traversal_order.base import TraversalOrder  # noqa: E402

from phiscale.data.ffcv_seeded import SeededRandomResizedCropFlip  # noqa: E402

ORDERS = {"quasi_random": OrderOption.QUASI_RANDOM}  # "random": EpochOrder below
# Inception-style crop (Szegedy et al. 2015), as torchvision's RandomResizedCrop defaults.
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def create_train_loader(
    path: str | Path, *, batch_size: int, num_workers: int, resolution: int, mean: Sequence[float],
    std: Sequence[float], device: torch.device, distributed: bool = False, seed: int = 0,
    order: str = "random", os_cache: bool = True, batches_ahead: int = 3, num_classes: int | None = None,
    min_crop_scale: float = CROP_SCALE[0], normalize: bool = True, flip_prob: float = 0.5,
) -> FfcvBatchLoader:
    """Random-resized-crop + flip + normalise (or uint8 images when not `normalize`: batch
    augmentation comes next), in a fresh random order each epoch (`EpochOrder`: one permutation
    per epoch at any world size, strided across ranks, the tail short of a global batch dropped)."""
    info = check_beton(path, num_classes=num_classes)
    if distributed and order == "quasi_random":
        raise PhiscaleError("data.order=quasi_random is not implemented by FFCV with distributed=True: "
                            "use data.order=random for multi-device runs")
    rank, world = rank_and_world_size(distributed)
    decoder = SeededRandomResizedCropFlip((resolution, resolution), scale=(float(min_crop_scale), 1.0),
                                          ratio=CROP_RATIO, seed=seed, flip_prob=flip_prob)
    image_pipeline = [decoder, *_to_torch_image(device, mean, std, normalize)]
    label_pipeline = [IntDecoder(), ToTensor(), Squeeze(1), ToDevice(device, non_blocking=True)]
    traversal = ORDERS[order] if order in ORDERS else EpochOrder(seed=seed, rank=rank, world_size=world,
                                                                 batch_size=batch_size)
    loader = Loader(
        str(info.path), batch_size=batch_size, num_workers=_numba_threads(num_workers), order=traversal,
        os_cache=os_cache, drop_last=True, distributed=distributed, seed=seed, batches_ahead=batches_ahead,
        pipelines={"image": image_pipeline, "label": label_pipeline},
    )
    return FfcvBatchLoader(loader, info, info.num_samples // world, device, mean, std, decoder=decoder, train=True,
                           normalize=normalize, world_size=world)


def create_val_loader(
    path: str | Path, *, batch_size: int, num_workers: int, resolution: int, mean: Sequence[float],
    std: Sequence[float], device: torch.device, distributed: bool = False, crop_ratio: float = DEFAULT_CROP_RATIO,
    os_cache: bool = True, batches_ahead: int = 3, num_classes: int | None = None,
) -> FfcvBatchLoader:
    """Center crop (side = crop_ratio x shorter side) resized to `resolution`, sequential, every
    sample once: with `distributed`, rank r reads samples r, r+W, ... (no padding, unlike FFCV's own)."""
    info = check_beton(path, num_classes=num_classes)
    rank, world = rank_and_world_size(distributed)
    indices = val_shard(info.num_samples, rank, world)
    decoder = CenterCropRGBImageDecoder((resolution, resolution), ratio=crop_ratio)
    image_pipeline = [decoder, *_to_torch_image(device, mean, std)]
    label_pipeline = [IntDecoder(), ToTensor(), Squeeze(1), ToDevice(device, non_blocking=True)]
    loader = Loader(
        str(info.path), batch_size=batch_size, num_workers=_numba_threads(num_workers),
        order=OrderOption.SEQUENTIAL, os_cache=os_cache, drop_last=False, indices=indices,
        batches_ahead=batches_ahead, pipelines={"image": image_pipeline, "label": label_pipeline},
    )
    return FfcvBatchLoader(loader, info, len(indices), device, mean, std, decoder=decoder, train=False)


class EpochOrder(TraversalOrder):
    """`batch_loader.epoch_order` as FFCV's traversal order: FFCV calls the instance with its Loader
    (`Loader(order=...)`); `start` is where the next epoch begins (a mid-epoch resume)."""

    def __init__(self, *, seed: int, rank: int, world_size: int, batch_size: int) -> None:
        self.seed, self.rank, self.world_size, self.batch_size = int(seed), int(rank), int(world_size), int(batch_size)
        self.start, self.sampler = 0, None

    def __call__(self, loader: Loader) -> EpochOrder:
        self.loader, self.indices, self.distributed = loader, loader.indices, loader.distributed
        return self

    def sample_order(self, epoch: int) -> np.ndarray:
        positions = epoch_order(len(self.indices), seed=self.seed, epoch=epoch, rank=self.rank,
                                world_size=self.world_size, batch_size=self.batch_size, start=self.start)
        return self.indices[positions]


def _to_torch_image(device: torch.device, mean: Sequence[float], std: Sequence[float], normalize: bool = True) -> list:
    """The pipeline tail from decoded uint8 HWC crops to torch images on `device`."""
    if device.type == "cuda":
        return [ToTensor(), ToDevice(device, non_blocking=True), ToTorchImage()]  # normalised by FfcvBatchLoader
    if not normalize:  # uint8 on the CPU (no ToDevice: ffcv issue 396's spin needs it there)
        return [ToTensor(), ToTorchImage()]
    return [NormalizeImage(np.array(mean), np.array(std), np.float32), ToTensor(), ToDevice(device),
            ToTorchImage()]


def _numba_threads(num_workers: int) -> int:
    """FFCV's worker count is numba's thread count, which cannot exceed the cores numba saw."""
    from numba import config

    return max(1, min(int(num_workers), config.NUMBA_NUM_THREADS))


class FfcvBatchLoader:
    """An ffcv Loader as a `BatchLoader`: epoch control, resolution changes."""

    def __init__(self, loader: Loader, info: BetonInfo, num_samples: int, device: torch.device,
                 mean: Sequence[float], std: Sequence[float], *, decoder, train: bool, normalize: bool = True,
                 world_size: int = 1):
        self.loader, self.info, self.num_samples, self.device = loader, info, num_samples, device
        self.global_batch_size, self._skip = world_size * loader.batch_size, 0
        self._decoder, self._train = decoder, train  # the decoder's output size is the resolution
        on_gpu = normalize and device.type == "cuda"
        self._normalize = Normalize(mean, std, device, CUDA_IMAGE_DTYPE) if on_gpu else None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.next_epoch = int(epoch)  # FFCV seeds each epoch's order with seed + epoch

    @property
    def resolution(self) -> int:
        return int(self._decoder.output_size[0])

    def set_resolution(self, resolution: int) -> None:
        if not self._train:
            raise PhiscaleError("set_resolution is for train loaders: build a new val loader for another resolution")
        if int(resolution) != self.resolution:
            self._decoder.output_size = (int(resolution), int(resolution))
            self.loader.code = None  # FFCV regenerates (and numba recompiles) the pipeline on the next epoch

    def start_epoch_at(self, samples_done: int) -> int:
        if not self._train:
            raise PhiscaleError("start_epoch_at is for train loaders: a val epoch always reads every sample")
        world = self.global_batch_size // self.loader.batch_size
        order = self.loader.traversal_order
        if isinstance(order, EpochOrder):
            order.start = int(samples_done)
        else:  # quasi_random (one rank): skip the batches already trained on
            self._skip = int(samples_done) // self.loader.batch_size
        return batches_left(self.info.num_samples, samples_done, world, self.loader.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        quiet_uncacheable_warnings()
        batches = iter(self.loader)  # torch's threads stay (numba_cache patches ffcv's Compiler)
        skip, self._skip = self._skip, 0
        if isinstance(self.loader.traversal_order, EpochOrder):
            self.loader.traversal_order.start = 0  # a resumed epoch's place: that epoch only
        for index, (images, labels) in enumerate(batches):
            if index < skip:
                continue
            yield (self._normalize(images) if self._normalize else images), labels
