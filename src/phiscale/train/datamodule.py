"""The DataModule: builds phiscale's loaders inside Lightning's hooks, one pair per rank.

FFCV shards per rank itself (`distributed=True`), so the Trainer runs with Lightning's own
sampler off (`use_distributed_sampler=False`). The loaders are wrapped so that Lightning's
epoch bookkeeping reaches them (`sampler.set_epoch`) and a mid-epoch resume skips the batches
the checkpoint already trained on, giving the same order as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning.pytorch as L
import torch


class ResumableLoader:
    """Wraps a BatchLoader: exposes `sampler.set_epoch` for Lightning, skips batches on resume."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.sampler = self  # Lightning calls `dataloader.sampler.set_epoch(epoch)` each epoch
        self.skip_batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def set_resolution(self, resolution: int) -> None:
        self.loader.set_resolution(resolution)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        skip, self.skip_batches = self.skip_batches, 0
        for index, batch in enumerate(self.loader):
            if index >= skip:
                yield batch


class ImageDataModule(L.LightningDataModule):
    """Train and val loaders for one data config at the given resolutions."""

    def __init__(
        self,
        data_cfg: Mapping[str, Any],
        *,
        train_resolution: int,
        eval_resolution: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.data_cfg = dict(data_cfg)
        self.train_resolution = train_resolution
        self.eval_resolution = eval_resolution
        self.seed = seed
        self.train_loader: ResumableLoader | None = None
        self.val_loader: Any = None

    def _common(self) -> dict[str, Any]:
        cfg = self.data_cfg
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        distributed = distributed and torch.distributed.get_world_size() > 1
        return dict(
            loader=cfg["loader"],
            batch_size=int(cfg["batch_size"]),
            num_workers=int(cfg["num_workers"]),
            mean=list(cfg["mean"]),
            std=list(cfg["std"]),
            device=self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu"),
            distributed=distributed,
            os_cache=bool(cfg.get("os_cache", True)),
            batches_ahead=int(cfg.get("batches_ahead", 2)),
            num_classes=int(cfg["num_classes"]),
        )

    def setup(self, stage: str) -> None:
        from phiscale.data import dataset_sources, make_train_loader, make_val_loader

        train_source, val_source = dataset_sources(self.data_cfg)
        common = self._common()
        if stage == "fit" and self.train_loader is None:
            self.train_loader = ResumableLoader(
                make_train_loader(
                    train_source,
                    resolution=self.train_resolution,
                    seed=self.seed,
                    order=self.data_cfg.get("order", "random"),
                    min_crop_scale=float(self.data_cfg.get("min_crop_scale", 0.08)),
                    **common,
                )
            )
        if self.val_loader is None:
            self.val_loader = make_val_loader(
                val_source,
                resolution=self.eval_resolution,
                crop_ratio=float(self.data_cfg["crop_ratio"]),
                **common,
            )

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return self.val_loader
