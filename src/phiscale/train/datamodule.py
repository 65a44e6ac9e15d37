"""The DataModule: builds phiscale's loaders inside Lightning's hooks, one pair per rank.

FFCV shards per rank itself (`distributed=True`), so the Trainer runs with Lightning's own
sampler off (`use_distributed_sampler=False`). The loaders are wrapped so that Lightning's
epoch bookkeeping reaches them (`sampler.set_epoch`) and a mid-epoch resume starts after the
samples the checkpoint already trained on: at the same world size the same batches as an
uninterrupted run; at another one the rest of that epoch's order split across the new ranks
(`phiscale.data.batch_loader.epoch_order`), so no sample is seen twice within the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lightning.pytorch as L
import torch


class ResumableLoader:
    """Wraps a BatchLoader for Lightning: `sampler.set_epoch` each epoch, and a stateful loader
    (Lightning saves its `state_dict` in every checkpoint and hands it back on resume), so a
    mid-epoch resume starts after the samples the checkpoint already trained on, at the epoch's
    resolution, whatever the number of ranks now.

    `batches_done()` is how many batches of the current epoch the training loop has processed
    (the DataModule points it at Lightning's progress counter); `shift_batches(n)` moves that
    counter by n when a resume at another world size re-counts the epoch in the new ranks' batches.

    The state saved: the epoch's global samples consumed (`samples_done`, what a resume at any
    world size starts after) and the batches done (as the writer's ranks counted them).
    """

    def __init__(self, loader: Any, batches_done: Callable[[], int] = lambda: 0,
                 shift_batches: Callable[[int], None] = lambda n: None) -> None:
        self.loader = loader
        self.sampler = self  # Lightning calls `dataloader.sampler.set_epoch(epoch)` each epoch
        self.batches_done = batches_done
        self.shift_batches = shift_batches
        self.skip_batches = 0  # batches to skip (a loader without `start_epoch_at`)
        self._base = (0, 0)  # (samples, batches) of this epoch done before this process resumed it
        self._resuming = False  # load_state_dict set a base for the next epoch to begin
        self.resolution: int | None = None  # set by progressive resizing

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def set_resolution(self, resolution: int) -> None:
        self.resolution = int(resolution)
        self.loader.set_resolution(resolution)

    def samples_done(self, batches_done: int) -> int:
        """The epoch's global samples consumed after `batches_done` batches (as Lightning counts them)."""
        samples, batches = self._base
        return samples + (batches_done - batches) * int(getattr(self.loader, "global_batch_size", 0))

    def state_dict(self) -> dict[str, int | None]:
        done = self.batches_done()
        if done >= len(self):  # the epoch is complete: a resume starts the next one
            done = 0
        return {"batches_done": done, "samples_done": self.samples_done(done) if done else 0,
                "resolution": self.resolution}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        done = int(state.get("batches_done") or 0)
        if state.get("resolution"):
            self.set_resolution(int(state["resolution"]))
        if not done:
            return
        if not hasattr(self.loader, "start_epoch_at"):
            self.skip_batches = done
            return
        samples = state.get("samples_done")  # None: a checkpoint from before samples were counted
        samples = int(samples) if samples is not None else done * int(self.loader.global_batch_size)
        left = self.loader.start_epoch_at(samples)
        # Lightning restored its counter as `done` (the writer's batches); count the epoch in this
        # world's batches instead, so that it ends where the rest of the epoch's order does.
        self._base, self._resuming = (samples, len(self) - left), True
        if self._base[1] != done:
            self.shift_batches(self._base[1] - done)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        skip, self.skip_batches = self.skip_batches, 0
        if not self._resuming:  # a resumed epoch keeps its base until it ends (`state_dict` reads it)
            self._base = (0, 0)
        self._resuming = False
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
                shift_batches=self._shift_batches,
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

    def _shift_batches(self, n: int) -> None:
        # A resume at another world size: the epoch's batches done, counted in this world's batches
        # (Lightning ends the epoch when its counter reaches the loader's length).
        if self.trainer is None:
            return
        current = self.trainer.fit_loop.epoch_loop.batch_progress.current
        for name in ("ready", "started", "processed", "completed"):
            setattr(current, name, max(getattr(current, name) + n, 0))

    def train_dataloader(self):
        return self.train_loader

    def val_dataloader(self):
        return self.val_loader
