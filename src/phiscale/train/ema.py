"""An exponential moving average of a model's weights, evaluated beside the live model."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from phiscale.errors import PhiscaleError


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / DataParallel / DeepSpeed engines and torch.compile."""
    while True:
        if (
            isinstance(model, (DistributedDataParallel, DataParallel))
            or type(model).__name__ == "DeepSpeedEngine"
        ):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


class ModelEma(nn.Module):
    """A frozen copy of `model` whose weights track `decay * ema + (1 - decay) * live`.

    As a submodule of the LightningModule its weights land in every checkpoint (`<attr>.module.*`)
    and follow the module across devices. The copy always stays in eval mode, so BN uses running
    statistics; those and all other buffers are copied from the live model on each update (as
    TF's EfficientNet restores `moving_mean/variance` from the live run beside the averaged weights).

    With `warmup=True` the decay used at global step `step` is `min(decay, (1 + step) / (10 + step))`,
    the `num_updates` rule of TF's `tf.train.ExponentialMovingAverage` that the EfficientNet code uses
    (tensorflow/tpu `efficientnet/main.py`, `num_updates=global_step`), so early averages are not
    dominated by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise PhiscaleError(
                f"optim.ema_decay={decay} is invalid; use 0 < ema_decay < 1 (e.g. 0.9999) or null for no EMA"
            )
        self.decay = float(decay)
        self.warmup = warmup
        self.module = copy.deepcopy(unwrap_model(model))
        self.module.requires_grad_(False)
        self.module.eval()

    def train(self, mode: bool = True) -> ModelEma:
        """Stay in eval mode whatever the parent asks: the average is never trained."""
        return super().train(False)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def decay_at(self, step: int) -> float:
        """The decay applied by `update(model, step)`."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Move the averaged weights toward `model`'s (wrapped or not) and copy its buffers.

        `step` is the global optimizer step (it only matters with `warmup=True`)."""
        live = unwrap_model(model)
        ema_params = list(self.module.parameters())
        live_params = list(live.parameters())
        ema_buffers = list(self.module.buffers())
        live_buffers = list(live.buffers())
        if len(ema_params) != len(live_params) or len(ema_buffers) != len(live_buffers):
            raise RuntimeError(
                f"ModelEma.update: the model has {len(live_params)} parameters and {len(live_buffers)} buffers, "
                f"the average {len(ema_params)} and {len(ema_buffers)}; pass the model the EMA was made from"
            )
        if ema_params:
            live_params = _like(live_params, ema_params[0])
            # ema <- ema + (1 - decay) * (live - ema) == decay * ema + (1 - decay) * live
            torch._foreach_lerp_(ema_params, live_params, 1.0 - self.decay_at(step))
        if ema_buffers:
            torch._foreach_copy_(ema_buffers, live_buffers)

    def extra_repr(self) -> str:
        return f"decay={self.decay}, warmup={self.warmup}"


def _like(tensors: list[torch.Tensor], reference: torch.Tensor) -> list[torch.Tensor]:
    """`tensors` on the reference's device and dtype (e.g. a bf16 live model, an fp32 average)."""
    first = tensors[0]
    if first.device == reference.device and first.dtype == reference.dtype:
        return [t.detach() for t in tensors]
    return [t.detach().to(device=reference.device, dtype=reference.dtype) for t in tensors]
