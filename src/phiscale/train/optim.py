"""Optimisers, parameter groups and the per-step LR schedule of the two training recipes.

`build_optimizer` and `build_lr_schedule` read the `optim` config group (conf/optim/*.yaml); the
recipe table `RECIPES` maps each `optim.name` to its optimiser builder and its post-warmup decay.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from phiscale.errors import PhiscaleError

# Warmup never takes more than this share of the run's optimizer steps. The recipes' 5 warmup
# epochs are ~1.4% of EfficientNet's 350 epochs (arXiv 1905.11946 §5) and ~3% of a 150-epoch
# MobileNet run, so real runs are untouched; a 3-epoch CPU demo would otherwise spend the whole
# run warming up. `resolved_warmup_steps` says what was used, for the caller to log.
MAX_WARMUP_FRACTION = 0.1

# Linear scaling rule (Goyal et al. 2017, arXiv 1706.02677 §2.1): lr = lr_per_256 * batch / 256.
LR_REFERENCE_BATCH = 256


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow's semantics, as the EfficientNet and MobileNet papers trained with.

    Per parameter p with gradient g (TF `tf.compat.v1.train.RMSPropOptimizer`, the optimiser of
    arXiv 1905.11946 §5 and the tensorflow/tpu EfficientNet code):

        g   <- g + weight_decay * p                      (coupled L2, as TF adds it to the loss)
        ms  <- decay * ms + (1 - decay) * g^2            (ms starts at ONE, not zero)
        mom <- momentum * mom + lr * g / sqrt(ms + eps)  (lr inside the momentum; eps inside sqrt)
        p   <- p - mom

    PyTorch's `RMSprop` differs in all three marked places (ms starts at 0, eps outside the sqrt,
    lr applied after the momentum), which makes eps=1e-3 and the first steps behave very
    differently. With `decoupled_decay=True` weight decay is instead `p <- p * (1 - lr * wd)`
    before the update (AdamW-style, arXiv 1711.05101) and the gradient is left alone.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.016,
        decay: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
        *,
        decoupled_decay: bool = False,
    ) -> None:
        if not lr >= 0.0:
            raise PhiscaleError(f"RMSpropTF lr={lr} is invalid; use a learning rate >= 0")
        if not 0.0 <= decay < 1.0:
            raise PhiscaleError(
                f"RMSpropTF decay={decay} is invalid; use 0 <= decay < 1 (the paper uses 0.9)"
            )
        if not momentum >= 0.0:
            raise PhiscaleError(
                f"RMSpropTF momentum={momentum} is invalid; use momentum >= 0 (the paper uses 0.9)"
            )
        if not eps > 0.0:
            raise PhiscaleError(f"RMSpropTF eps={eps} is invalid; use eps > 0 (TF-style 1e-3)")
        if not weight_decay >= 0.0:
            raise PhiscaleError(f"RMSpropTF weight_decay={weight_decay} is invalid; use weight_decay >= 0")
        defaults = dict(
            lr=lr,
            decay=decay,
            momentum=momentum,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_decay=decoupled_decay,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, square_avgs, momentum_bufs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("RMSpropTF does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    if group["momentum"] > 0:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                square_avgs.append(state["square_avg"])
                if group["momentum"] > 0:
                    momentum_bufs.append(state["momentum_buffer"])
            if params:
                _rmsprop_tf_update(params, grads, square_avgs, momentum_bufs, group)
        return loss


def _rmsprop_tf_update(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    square_avgs: list[torch.Tensor],
    momentum_bufs: list[torch.Tensor],
    group: Mapping[str, Any],
) -> None:
    """One RMSpropTF step for a parameter group, on lists of tensors (one kernel per op on GPU)."""
    lr, decay, momentum = group["lr"], group["decay"], group["momentum"]
    eps, weight_decay = group["eps"], group["weight_decay"]
    if weight_decay != 0:
        if group["decoupled_decay"]:
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(square_avgs, decay)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1.0 - decay)
    denom = torch._foreach_add(square_avgs, eps)
    torch._foreach_sqrt_(denom)
    if momentum > 0:
        torch._foreach_mul_(momentum_bufs, momentum)
        torch._foreach_addcdiv_(momentum_bufs, grads, denom, value=lr)
        torch._foreach_sub_(params, momentum_bufs)
    else:
        torch._foreach_addcdiv_(params, grads, denom, value=-lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a `decay` group and a `no_decay` group (weight decay 0).

    Every parameter with at most one dimension (norm layers' scales and shifts, all biases) goes
    to `no_decay`: decaying BN's gamma/beta only fights the normalisation (Goyal et al. 2017,
    arXiv 1706.02677 §5.1 decays weights only; Jia et al. 2018, arXiv 1807.11205 §3.2 "no bias
    decay"). Frozen parameters (requires_grad=False, e.g. an EMA copy) are left out. Each group
    carries `name` (Lightning's LearningRateMonitor uses it) and `param_names`; empty groups are
    dropped.
    """
    if not weight_decay >= 0.0:
        raise PhiscaleError(f"optim.weight_decay={weight_decay} is invalid; use a value >= 0")
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append((name, param))
    groups = [("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)]
    return [
        {
            "name": group_name,
            "params": [p for _, p in named],
            "param_names": [n for n, _ in named],
            "weight_decay": wd,
        }
        for group_name, named, wd in groups
        if named
    ]


def resolved_lr(optim_cfg: Any, global_batch_size: int) -> float:
    """The peak learning rate by the linear scaling rule: `lr_per_256 * global_batch_size / 256`."""
    if not (_is_count(global_batch_size) and global_batch_size > 0):
        raise PhiscaleError(
            f"global batch size {global_batch_size!r} is invalid; use a positive integer "
            "(per-device batch x devices x nodes x gradient accumulation)"
        )
    lr_per_256 = _positive(optim_cfg, "lr_per_256")
    return lr_per_256 * int(global_batch_size) / LR_REFERENCE_BATCH


def build_optimizer(optim_cfg: Any, model: nn.Module, global_batch_size: int) -> torch.optim.Optimizer:
    """The optimiser named by `optim_cfg.name`, at `resolved_lr`, with norm/bias weight decay off."""
    recipe = _recipe(optim_cfg)
    lr = resolved_lr(optim_cfg, global_batch_size)
    groups = param_groups(model, _non_negative(optim_cfg, "weight_decay"))
    return recipe.build_optimizer(optim_cfg, groups, lr)


def _build_rmsprop_tf(optim_cfg: Any, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    return RMSpropTF(
        groups,
        lr=lr,
        decay=_fraction(optim_cfg, "decay", closed_right=False),
        momentum=_non_negative(optim_cfg, "momentum"),
        eps=_positive(optim_cfg, "eps"),
        decoupled_decay=bool(_get(optim_cfg, "decoupled_decay", False)),
    )


def _build_sgd(optim_cfg: Any, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    momentum = _non_negative(optim_cfg, "momentum")
    nesterov = bool(_get(optim_cfg, "nesterov", False))
    if nesterov and momentum == 0:
        raise PhiscaleError(
            "optim.nesterov=true needs optim.momentum > 0; set momentum (e.g. 0.9) or nesterov=false"
        )
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)


# ------------------------------------------------------------------------------------------------
# Learning-rate schedule: linear warmup, then the recipe's decay. One multiplier per optimizer step.


@dataclass(frozen=True)
class LrSchedule:
    """A resolved schedule: `multiplier(step)` scales the peak lr after `step` optimizer steps."""

    decay: Callable[[LrSchedule, int], float]
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    warmup_lr_ratio: float
    lr_decay_rate: float = 1.0
    lr_decay_epochs: float = 1.0
    min_lr_ratio: float = 0.0

    def multiplier(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr_ratio + (1.0 - self.warmup_lr_ratio) * step / self.warmup_steps
        return self.decay(self, step)


def _staircase_decay(schedule: LrSchedule, step: int) -> float:
    """×rate every `lr_decay_epochs`, counted from step 0 like TF's `exponential_decay(staircase=True)`
    on the global step (tensorflow/tpu EfficientNet `utils.build_learning_rate`): warmup only
    overrides the first steps, it does not delay the decay."""
    epoch = step / schedule.steps_per_epoch
    # The small epsilon keeps e.g. 7.2 / 2.4 = 2.9999999999999996 on the right stair.
    return schedule.lr_decay_rate ** math.floor(epoch / schedule.lr_decay_epochs + 1e-9)


def _cosine_decay(schedule: LrSchedule, step: int) -> float:
    """Half-cosine from 1 at the end of warmup to `min_lr_ratio` at the last step (SGDR without
    restarts, Loshchilov & Hutter, arXiv 1608.03983 eq. 5; with warmup as He et al., arXiv 1812.01187
    §3.1, §5.1)."""
    span = max(1, schedule.total_steps - schedule.warmup_steps)
    progress = min(1.0, max(0.0, (step - schedule.warmup_steps) / span))
    return schedule.min_lr_ratio + (1.0 - schedule.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_lr_schedule(optim_cfg: Any, *, steps_per_epoch: int, max_epochs: int) -> LrSchedule:
    """Read and check the schedule fields of `optim_cfg` once (the per-step call is then cheap)."""
    recipe = _recipe(optim_cfg)
    if not (_is_count(steps_per_epoch) and steps_per_epoch > 0):
        raise PhiscaleError(
            f"steps_per_epoch={steps_per_epoch!r} is invalid; use a positive integer (optimizer steps)"
        )
    if not (_is_count(max_epochs) and max_epochs > 0):
        raise PhiscaleError(
            f"max_epochs={max_epochs!r} is invalid; use a positive integer (trainer.max_epochs)"
        )
    steps_per_epoch, max_epochs = int(steps_per_epoch), int(max_epochs)
    total_steps = steps_per_epoch * max_epochs
    warmup_epochs = _non_negative(optim_cfg, "warmup_epochs")
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), math.floor(MAX_WARMUP_FRACTION * total_steps))
    fields: dict[str, float] = {}
    for key in recipe.schedule_fields:
        fields[key] = _SCHEDULE_FIELD_CHECKS[key](optim_cfg, key)
    return LrSchedule(
        decay=recipe.decay,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        warmup_lr_ratio=_fraction(optim_cfg, "warmup_lr_ratio"),
        **fields,
    )


def resolved_warmup_steps(optim_cfg: Any, *, steps_per_epoch: int, max_epochs: int) -> int:
    """Warmup length in optimizer steps after the `MAX_WARMUP_FRACTION` cap (for the caller to log)."""
    return resolve_lr_schedule(optim_cfg, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs).warmup_steps


def lr_multiplier(optim_cfg: Any, step: int, steps_per_epoch: int, max_epochs: int) -> float:
    """The factor on the peak lr after `step` optimizer steps (0 at the very first step when
    `warmup_lr_ratio` is 0, as in TF's warmup `lr * global_step / warmup_steps`)."""
    return resolve_lr_schedule(optim_cfg, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs).multiplier(
        step
    )


def build_lr_schedule(
    optim_cfg: Any, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, max_epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over `lr_multiplier`, to be stepped after every optimizer step
    (Lightning: `{"scheduler": s, "interval": "step", "frequency": 1}`).

    `steps_per_epoch` counts optimizer steps (batches per epoch / gradient accumulation)."""
    schedule = resolve_lr_schedule(optim_cfg, steps_per_epoch=steps_per_epoch, max_epochs=max_epochs)

    def multiplier(step: int) -> float:  # a plain function: LambdaLR's state_dict skips it cleanly
        return schedule.multiplier(step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


# ------------------------------------------------------------------------------------------------
# The recipe table and config readers.


@dataclass(frozen=True)
class Recipe:
    build_optimizer: Callable[[Any, list[dict[str, Any]], float], torch.optim.Optimizer]
    decay: Callable[[LrSchedule, int], float]
    schedule_fields: tuple[str, ...]


RECIPES: dict[str, Recipe] = {
    "rmsprop_tf": Recipe(_build_rmsprop_tf, _staircase_decay, ("lr_decay_rate", "lr_decay_epochs")),
    "sgd_cosine": Recipe(_build_sgd, _cosine_decay, ("min_lr_ratio",)),
}

_MISSING = object()


def _get(cfg: Any, key: str, default: Any = _MISSING) -> Any:
    """`cfg.key` for a DictConfig, dict or namespace; a missing required key is a PhiscaleError."""
    value = (
        cfg.get(key, default)
        if isinstance(cfg, Mapping) or hasattr(cfg, "get")
        else getattr(cfg, key, default)
    )
    if value is _MISSING:
        raise PhiscaleError(
            f"optim.{key} is missing; add `{key}: <value>` to the optim config (see conf/optim/)"
        )
    return value


def _is_count(value: Any) -> bool:
    """An int, or an int-valued number (numpy ints, Lightning's float step estimates), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer()


def _number(cfg: Any, key: str) -> float:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PhiscaleError(f"optim.{key}={value!r} is not a number; set it to a number")
    return float(value)


def _positive(cfg: Any, key: str) -> float:
    value = _number(cfg, key)
    if not value > 0:
        raise PhiscaleError(f"optim.{key}={value} is invalid; use a value > 0")
    return value


def _non_negative(cfg: Any, key: str) -> float:
    value = _number(cfg, key)
    if not value >= 0:
        raise PhiscaleError(f"optim.{key}={value} is invalid; use a value >= 0")
    return value


def _fraction(cfg: Any, key: str, *, closed_right: bool = True) -> float:
    value = _number(cfg, key)
    if not (0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0):
        bound = "<= 1" if closed_right else "< 1"
        raise PhiscaleError(f"optim.{key}={value} is invalid; use 0 <= {key} {bound}")
    return value


def _decay_rate(cfg: Any, key: str) -> float:
    value = _number(cfg, key)
    if not 0.0 < value <= 1.0:
        raise PhiscaleError(f"optim.{key}={value} is invalid; use 0 < {key} <= 1 (the paper uses 0.97)")
    return value


_SCHEDULE_FIELD_CHECKS: dict[str, Callable[[Any, str], float]] = {
    "lr_decay_rate": _decay_rate,
    "lr_decay_epochs": _positive,
    "min_lr_ratio": _fraction,
}


def _recipe(optim_cfg: Any) -> Recipe:
    name = _get(optim_cfg, "name")
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise PhiscaleError(
            f"optim.name={name!r} is unknown; use one of: {', '.join(sorted(RECIPES))}"
        ) from None
