"""The LightningModule: one image classifier, its loss, metrics, optimiser and EMA weights."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn

from phiscale.errors import PhiscaleError
from phiscale.train.ema import ModelEma
from phiscale.train.optim import build_lr_schedule, build_optimizer
from phiscale.train.seeding import gather_rank_states, restore_rank_states


class NonFiniteLoss(PhiscaleError):
    """The loss became NaN or inf: training stops; last.ckpt (never written after it) is the last good state."""


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is among the top-k logits, for each k (k capped at #classes)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top.eq(labels[:, None])
    return [hits[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


class ImageClassifier(L.LightningModule):
    """Trains `model` with label-smoothed cross-entropy; logs top-1/top-5 (and EMA's) per epoch.

    `optim_cfg` is the resolved `optim` config group; `global_batch_size` drives the LR scaling rule.
    `run_config` (the whole resolved config) is stored in the checkpoint so `phiscale-eval` and
    `phiscale-export` can rebuild the model from the checkpoint alone. With `augment` (a
    phiscale.augment.BatchAugment) the train loader hands over uint8 batches, which are augmented
    and then normalised with `mean`/`std` on the device, for training steps only; mixup/CutMix
    targets are soft and the loss reads them as such.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optim_cfg: Mapping[str, Any],
        global_batch_size: int,
        channels_last: bool = True,
        compile_model: bool = False,
        run_config: Mapping[str, Any] | None = None,
        augment: Any = None,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "augment"])
        self.augment = augment if augment is not None and augment.active else None
        self._mean, self._std = list(mean), list(std)
        self._normalize = None  # built on the first batch's device
        self.model = model
        self.optim_cfg = dict(optim_cfg)
        self.global_batch_size = global_batch_size
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        ema_decay = self.optim_cfg.get("ema_decay")
        self.ema = ModelEma(self.model, decay=ema_decay) if ema_decay else None
        self._forward = torch.compile(self.model) if compile_model else self.model
        self.criterion = nn.CrossEntropyLoss(label_smoothing=float(self.optim_cfg.get("label_smoothing") or 0.0))
        self.best_val_top1 = 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._forward(self._match_dtype(images))

    def _match_dtype(self, images: torch.Tensor) -> torch.Tensor:
        """CUDA loaders hand over fp16 batches; outside autocast, meet the weights' dtype."""
        weight_dtype = next(self.model.parameters()).dtype
        if images.dtype != weight_dtype and not torch.is_autocast_enabled(images.device.type):
            images = images.to(weight_dtype)
        return images

    # -- training ------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches: augment the uint8 images on their device, then normalise them."""
        if self.augment is None or not self.trainer.training:
            return batch
        images, labels = self.augment(*batch)
        if self._normalize is None:
            from phiscale.data.batch_loader import CUDA_IMAGE_DTYPE, Normalize

            dtype = CUDA_IMAGE_DTYPE if images.device.type == "cuda" else torch.float32
            self._normalize = Normalize(self._mean, self._std, images.device, dtype)
        return self._normalize(images), labels

    def training_step(self, batch, batch_idx: int):
        images, labels = batch  # labels: int64 [N], or soft targets [N, C] (mixup / CutMix)
        logits = self(images)
        if labels.dim() == 2:
            from phiscale.augment import soft_target_cross_entropy

            loss = soft_target_cross_entropy(logits.float(), labels)  # label smoothing already folded in
        else:
            loss = self.criterion(logits.float(), labels)
        self._check_finite(loss.detach())
        if self._logs_this_step():
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=len(labels))
        return loss

    def _logs_this_step(self) -> bool:
        """Lightning keeps a step's logged value only every log_every_n_steps; `self.log` costs
        ~1-2 ms of Python, so skip it on the steps Lightning would drop anyway."""
        connector = getattr(self.trainer, "_logger_connector", None)
        return True if connector is None else bool(connector.should_update_logs)

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop on a NaN/inf loss. Reading the loss forces a device sync, so on CUDA the flag is
        accumulated on the device and read once per logging interval (and before every checkpoint,
        `raise_if_nonfinite`); on CPU it is read every step, before the update."""
        self._nonfinite = ~torch.isfinite(loss) | getattr(self, "_nonfinite", False)
        if loss.device.type == "cuda" and (self.global_step + 1) % max(1, self.trainer.log_every_n_steps):
            return
        self.raise_if_nonfinite()

    def raise_if_nonfinite(self) -> None:
        """Raise NonFiniteLoss if any loss since the start was NaN/inf (all ranks agree)."""
        bad = bool(getattr(self, "_nonfinite", False))
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            raise NonFiniteLoss(
                f"loss became non-finite (nan/inf) by step {self.global_step} (epoch {self.current_epoch}); "
                "last.ckpt holds the last good state (no checkpoint is written after a bad step): resume "
                "from it with a lower optim.lr_per_256 or a trainer.gradient_clip_val, or check the data"
            )

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    # -- validation ------------------------------------------------------------------
    # Sums (loss, top-1 hits, top-5 hits, images) per prefix, reduced across ranks at epoch end:
    # the logged numbers are the exact accuracy over the whole val set, whatever the sharding.
    def on_validation_epoch_start(self) -> None:
        self._val_sums: dict[str, torch.Tensor] = {}

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        self._accumulate("val", self(images), labels)
        if self.ema is not None:
            self._accumulate("val_ema", self.ema(self._match_dtype(images)), labels)

    def _accumulate(self, prefix: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        loss = nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        top1, top5 = topk_correct(logits, labels)
        sums = torch.stack([loss.detach(), top1.float(), top5.float(), torch.tensor(float(len(labels)), device=loss.device)])
        self._val_sums[prefix] = self._val_sums.get(prefix, 0) + sums.double()

    def on_validation_epoch_end(self) -> None:
        for prefix, sums in sorted(self._val_sums.items()):
            loss, top1, top5, n = (self.trainer.strategy.reduce(sums, reduce_op="sum") / 1.0).tolist()
            n = max(n, 1.0)
            metrics = {f"{prefix}/loss": loss / n, f"{prefix}/top1": top1 / n, f"{prefix}/top5": top5 / n}
            self.log_dict(metrics, prog_bar=prefix == "val", sync_dist=False, rank_zero_only=False)
        if self.trainer.sanity_checking or "val" not in self._val_sums:
            return
        self.best_val_top1 = max(self.best_val_top1, float(self.trainer.callback_metrics["val/top1"]))
        self.log("val/top1_best", self.best_val_top1)  # the same value on every rank

    # -- optimiser -------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = build_optimizer(self.optim_cfg, self.model, self.global_batch_size)
        max_epochs = max(1, self.trainer.max_epochs or 1)
        schedule = build_lr_schedule(self.optim_cfg, optimizer, steps_per_epoch=self._steps_per_epoch(),
                                     max_epochs=max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def _steps_per_epoch(self) -> int:
        """Optimizer steps per epoch, counted from the DataModule's train loader. (Lightning's
        `estimated_stepping_batches` would start the train loader's iterator here, before a resume
        restores the loader's position in the epoch, and the resumed epoch would begin at batch 0.)"""
        trainer = self.trainer
        loader = getattr(trainer.datamodule, "train_loader", None) if trainer.datamodule is not None else None
        if loader is None:  # plain dataloaders (benchmarks, tests): Lightning's own estimate
            total = trainer.estimated_stepping_batches
            return max(1, int(total // max(1, trainer.max_epochs or 1))) if total != float("inf") else 1000
        batches, limit = len(loader), trainer.limit_train_batches
        batches = min(batches, int(limit)) if isinstance(limit, int) else int(batches * float(limit))
        return max(1, math.ceil(batches / trainer.accumulate_grad_batches))  # as Lightning counts them

    def on_before_optimizer_step(self, optimizer) -> None:
        if self._logs_this_step():
            self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    # -- checkpoint extras ------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        augment = self.augment.state_dict() if self.augment is not None else None
        metrics = self._trainer.callback_metrics if self._trainer is not None else {}  # None: saved by hand
        validated = {k: float(v) for k, v in metrics.items()
                     if k.startswith(("val/", "val_ema/")) and getattr(v, "numel", lambda: 1)() == 1}
        checkpoint["phiscale"] = {"best_val_top1": self.best_val_top1, "val_metrics": validated,
                                  "rng": gather_rank_states(self._trainer, augment=augment)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = checkpoint.get("phiscale", {})
        self.best_val_top1 = extra.get("best_val_top1", 0.0)
        if "rng" in extra:
            state = restore_rank_states(extra["rng"], self._trainer)
            if state is not None and self.augment is not None and state.get("augment") is not None:
                self.augment.load_state_dict(state["augment"])
