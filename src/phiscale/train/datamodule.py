"""The DataModule: builds phiscale's loaders inside Lightning's hooks, one pair per rank.

FFCV shards per rank itself (`distributed=True`), so the Trainer runs with Lightning's own
sampler off (`use_distributed_sampler=False`). The loaders are wrapped so that Lightning's
epoch bookkeeping reaches them (`sampler.set_epoch`) and a mid-epoch resume skips the batches
the checkpoint already trained on, giving the same order as an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lightning.pytorch as L
import torch


class ResumableLoader:
    """Wraps a BatchLoader for Lightning: `sampler.set_epoch` each epoch, and a stateful loader
    (Lightning saves its `state_dict` in every checkpoint and hands it back on resume), so a
    mid-epoch resume skips the batches the checkpoint already trained on, at the epoch's resolution.

    `batches_done()` is how many batches of the current epoch the training loop has processed
    (the DataModule points it at Lightning's progress counter).
    """

    def __init__(self, loader: Any, batches_done: Callable[[], int] = lambda: 0) -> None:
        self.loader = loader
        self.sampler = self  # Lightning calls `dataloader.sampler.set_epoch(epoch)` each epoch
        self.batches_done = batches_done
        self.skip_batches = 0
        self.resolution: int | None = None  # set by progressive resizing

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def set_resolution(self, resolution: int) -> None:
        self.resolution = int(resolution)
        self.loader.set_resolution(resolution)

    def state_dict(self) -> dict[str, int | None]:
        done = self.batches_done()
        return {"batches_done": done if done < len(self) else 0, "resolution": self.resolution}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        self.skip_batches = int(state.get("batches_done") or 0)
        if state.get("resolution"):
            self.set_resolution(int(state["resolution"]))

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
        uint8_train: bool = False,
    ) -> None:
        super().__init__()
        self.data_cfg = dict(data_cfg)
        self.train_resolution = train_resolution
        self.eval_resolution = eval_resolution
        self.seed = seed
        self.uint8_train = uint8_train  # batch augmentation follows: the module normalises
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
                batches_done=self._batches_done,
                loader=make_train_loader(
                    train_source,
                    resolution=self.train_resolution,
                    seed=self.seed,
                    order=self.data_cfg.get("order", "random"),
                    min_crop_scale=float(self.data_cfg.get("min_crop_scale", 0.08)),
                    flip_prob=float(self.data_cfg.get("flip_prob", 0.5)),
                    normalize=not self.uint8_train,
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

    def _batches_done(self) -> int:
        # Lightning counts a batch processed once its step ran; a checkpoint taken at a batch's
        # start or end then resumes with exactly the batches not yet trained on.
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed if self.trainer else 0

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return self.val_loader
