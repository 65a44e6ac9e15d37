"""Every random draw of a run from its `seed`: the model's initial weights, then one stream per rank
(dropout, drop path, augmentation), saved in every checkpoint per rank and restored on resume.

Data order and crops are seeded in the loaders themselves (the epoch order from seed + epoch at any
world size, phiscale.data.batch_loader.epoch_order, and
phiscale.data.ffcv_seeded's per-sample crops; the torch loader's per (seed, epoch, index)).
`trainer.deterministic` adds PyTorch's deterministic kernels.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

# Ops our models run that have no deterministic CUDA kernel (they accumulate with atomicAdd); with
# trainer.deterministic=true PyTorch warns when they run (torch.use_deterministic_algorithms docs).
CUDA_NONDETERMINISTIC = "adaptive_avg_pool2d backward (global pooling), index_add/scatter_add (atomicAdd)"


def rank_seed(seed: int, rank: int) -> int:
    """A 32-bit seed of rank `rank`'s own stream, derived from the run's seed (NumPy's SeedSequence)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1)[0])


def seed_rank_stream(seed: int, rank: int) -> None:
    """Seed torch, NumPy and Python for this rank: the same numbers on every restart of the run,
    different numbers on each rank (dropout masks and augmentations are not copies across ranks)."""
    stream = rank_seed(seed, rank)
    torch.manual_seed(stream)
    np.random.seed(stream)
    random.seed(stream)


def rng_states() -> dict[str, Any]:
    """Every RNG a training step draws from (dropout, drop path, augmentation in Python/numpy)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # Plain types and tensors only: Lightning loads checkpoints with torch.load(weights_only=True).
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _distributed(trainer) -> bool:
    return trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized()


def gather_rank_states(trainer, **extra: Any) -> dict[str, Any]:
    """Every rank's RNG states (and `extra` per-rank state, e.g. the augmentation's generators), for
    the checkpoint (a collective: all ranks save checkpoints together)."""
    states = rng_states() | extra
    if not _distributed(trainer):
        return {"ranks": [states]}
    gathered: list[Any] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, states)
    return {"ranks": gathered}


def restore_rank_states(saved: dict[str, Any], trainer) -> dict[str, Any] | None:
    """Continue this rank's own stream; returns its saved state (None when the checkpoint came from
    another world size: the streams then stay as seeded)."""
    ranks = saved.get("ranks", [saved])  # checkpoints before per-rank states held one rank's
    rank = trainer.global_rank if trainer is not None else 0
    world = trainer.world_size if trainer is not None else 1
    if len(ranks) != world:
        return None
    restore_rng_states(ranks[rank])
    return ranks[rank]
