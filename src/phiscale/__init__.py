"""phiscale: compound-scaled MobileNet / EfficientNet training with FFCV, Lightning, MLflow and SLURM."""

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from phiscale.train.torchmetrics_extras import skip_torchmetrics_extras

__version__ = "0.1.0"

# No calls home: MLflow 3.17 sends usage telemetry unless told not to (mlflow/telemetry/utils.py
# reads MLFLOW_DISABLE_TELEMETRY and DO_NOT_TRACK when `import mlflow` runs). Compute nodes have no
# route out, and its client races in forked writers (KeyError '_MLFLOW_TELEMETRY_SESSION_ID' on
# log-batch, seen with 48). Every phiscale process imports this first, and `mlflow server` inherits
# it; a user's own MLFLOW_DISABLE_TELEMETRY=false wins.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Lightning's torchmetrics without scipy.signal and matplotlib, which no phiscale process uses: over a
# quarter of importing Lightning (phiscale/train/torchmetrics_extras.py).
skip_torchmetrics_extras()


# Python's cyclic garbage collector is off while a process imports and builds what lives as long as it does
# (torch, Lightning, torch._dynamo, numba, MLflow, SQLAlchemy): its passes over those millions of objects as
# they are made cost 1.2-1.5 s of CPU, a fifth of a 1-step run on 2 cores and of every import of them
# (issue 31: `import torch, lightning.pytorch, torch._dynamo, mlflow` 6.7 -> 5.4 s of CPU, means of 3 pairs).
# When the last pause ends, everything that exists is frozen (later passes skip it: it is not garbage) and the collector
# runs again. phiscale-train pauses from its start to its first step (`pause_for_start_up` and
# `end_start_up_pause`, the callback CollectorFromFirstStep); the sender thread pauses while it imports
# MLflow and opens the store (`collector_paused`). Pauses nest, from any thread.
_collector = threading.Lock()
_pauses = 0
_start_up_paused = False


def _pause() -> None:
    global _pauses
    with _collector:
        if _pauses == 0:
            gc.disable()
        _pauses += 1


def _resume() -> None:
    global _pauses
    with _collector:
        _pauses -= 1
        if _pauses == 0:
            gc.freeze()
            gc.enable()


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off while the block imports or builds long-lived objects (see above)."""
    _pause()
    try:
        yield
    finally:
        _resume()


def pause_for_start_up() -> None:
    """The collector off from a command's start until `end_start_up_pause` (once per process)."""
    global _start_up_paused
    if not _start_up_paused:
        _start_up_paused = True
        _pause()


def end_start_up_pause() -> None:
    """End the pause `pause_for_start_up` began, if it did (a no-op otherwise, and the second time)."""
    global _start_up_paused
    if _start_up_paused:
        _start_up_paused = False
        _resume()
