"""DeepSpeed ZeRO configs from `conf/trainer/deepspeed.yaml`, for Lightning or raw `deepspeed`.

One function turns the small `trainer.deepspeed` block into DeepSpeed's JSON config, so the
Lightning strategy, the CPU smoke test and `benchmarks/gpu_check.py` train with the same config.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from phiscale.errors import PhiscaleError
from phiscale.paths import cache_dir

# DeepSpeed JIT-compiles its ops (the CPU shm all-reduce, cpu_adam, ...) with ninja on first use
# (~70 s); torch.utils.cpp_extension reads TORCH_EXTENSIONS_DIR each time it builds or loads one,
# so pointing it into the project's cache on import (before any deepspeed.initialize) makes the
# build a one-off. A TORCH_EXTENSIONS_DIR the user set wins.
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir("torch_extensions")))



@functools.cache
def deepspeed_defaults() -> dict[str, Any]:
    """The `trainer.deepspeed` keys and their defaults, read from their one home,
    `conf/trainer/deepspeed.yaml` (so raw `deepspeed` callers and the Hydra app agree)."""
    import yaml

    from phiscale.config import conf_dir

    return dict(yaml.safe_load((conf_dir() / "trainer" / "deepspeed.yaml").read_text())["deepspeed"])


PRECISIONS = ("bf16-mixed", "bf16-true", "16-mixed", "16-true", "32-true", "32")


def _resolve(ds_cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(ds_cfg or {})
    defaults = deepspeed_defaults()
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise PhiscaleError(f"unknown trainer.deepspeed key(s) {unknown}; use only {sorted(defaults)}")
    cfg = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    if cfg["stage"] not in (1, 2, 3):
        raise PhiscaleError(
            f"trainer.deepspeed.stage={cfg['stage']!r} is not a ZeRO stage; use trainer.deepspeed.stage=1, 2 or 3"
        )
    if cfg["offload_parameters"] and cfg["stage"] != 3:
        raise PhiscaleError(
            f"trainer.deepspeed.offload_parameters=true needs ZeRO stage 3, not stage {cfg['stage']}; "
            "set trainer.deepspeed.stage=3 or trainer.deepspeed.offload_parameters=false"
        )
    for key in ("reduce_bucket_size", "allgather_bucket_size"):
        if int(cfg[key]) <= 0:
            raise PhiscaleError(
                f"trainer.deepspeed.{key}={cfg[key]!r} must be a positive element count, e.g. 5e8"
            )
        cfg[key] = int(cfg[key])
    return cfg


def deepspeed_config(
    ds_cfg: Mapping[str, Any] | None,
    *,
    micro_batch_size: int,
    grad_accum: int = 1,
    precision: str = "bf16-mixed",
    grad_clip: float | None = None,
) -> dict[str, Any]:
    """DeepSpeed's config dict for ZeRO `ds_cfg["stage"]` (keys: conf/trainer/deepspeed.yaml).

    `micro_batch_size` is the per-device batch; bf16 precisions turn on DeepSpeed's bf16 mode
    (its master weights and optimizer state stay fp32); offloads go to pinned CPU memory.
    """
    cfg = _resolve(ds_cfg)
    if precision not in PRECISIONS:
        raise PhiscaleError(f"trainer.precision={precision!r} is not one of {list(PRECISIONS)}")
    if int(micro_batch_size) < 1 or int(grad_accum) < 1:
        raise PhiscaleError(
            f"micro batch size {micro_batch_size} and trainer.accumulate_grad_batches={grad_accum} must be >= 1"
        )
    zero: dict[str, Any] = {
        "stage": cfg["stage"],
        "overlap_comm": bool(cfg["overlap_comm"]),
        "contiguous_gradients": bool(cfg["contiguous_gradients"]),
        "reduce_bucket_size": cfg["reduce_bucket_size"],
    }
    if cfg["stage"] < 3:
        # ZeRO-3 gathers parameters with its own prefetch buckets; this key is for stages 1-2.
        zero["allgather_bucket_size"] = cfg["allgather_bucket_size"]
    if cfg["offload_optimizer"]:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": bool(cfg["pin_memory"])}
    if cfg["offload_parameters"]:
        zero["offload_param"] = {"device": "cpu", "pin_memory": bool(cfg["pin_memory"])}

    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": int(micro_batch_size),
        "gradient_accumulation_steps": int(grad_accum),
        "zero_optimization": zero,
        # We hand DeepSpeed a torch optimizer (AdamW/SGD from phiscale's optim config).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg["offload_optimizer"]:
        # DeepSpeed otherwise insists on its own CPU Adam under offload; phiscale's optimizers
        # (RMSprop-TF, SGD) are torch optimizers, which then step on the CPU copies.
        config["zero_force_ds_cpu_optimizer"] = False
    if precision.startswith("bf16"):
        config["bf16"] = {"enabled": True}
    elif precision.startswith("16"):
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    if precision.startswith(("bf16", "16")):
        # DeepSpeed 0.19 casts parameters only and keeps buffers fp32; BatchNorm then gets
        # half-precision weights with fp32 running stats and fails ("expected scalar type
        # BFloat16 but found Float"). Casting the buffers too is the old module.bfloat16().
        config["data_types"] = {"buffer_dtype": "bf16" if precision.startswith("bf16") else "fp16"}
    if grad_clip:
        config["gradient_clipping"] = float(grad_clip)
    return config


def deepspeed_strategy(
    ds_cfg: Mapping[str, Any] | None,
    *,
    micro_batch_size: int,
    grad_accum: int = 1,
    precision: str = "bf16-mixed",
    grad_clip: float | None = None,
    **strategy_kwargs: Any,
):
    """Lightning's DeepSpeedStrategy with `deepspeed_config(...)` (GPU only: Lightning refuses CPU).

    Lightning sets `gradient_accumulation_steps` itself from `Trainer(accumulate_grad_batches=...)`
    and refuses it in the config, so it is left out here: pass the same value to the Trainer.
    """
    from lightning.pytorch.strategies import DeepSpeedStrategy

    config = deepspeed_config(
        ds_cfg,
        micro_batch_size=micro_batch_size,
        grad_accum=grad_accum,
        precision=precision,
        grad_clip=grad_clip,
    )
    # Without grad_clip, Lightning fills `gradient_clipping` from Trainer(gradient_clip_val=...).
    del config["gradient_accumulation_steps"]
    return DeepSpeedStrategy(config=config, **strategy_kwargs)
