"""Training callbacks: throughput, last/periodic checkpoints, signals, progressive resizing."""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from phiscale import end_start_up_pause
from phiscale.train.plan import LAST


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory (CUDA) or peak resident set size of this process (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class ThroughputMonitor(L.Callback):
    """Logs images/s (global and per device), step time, data-wait fraction and peak memory.

    Averages over the logging window, synchronising CUDA only at window boundaries, so the
    numbers are exact for the window without slowing every step.
    """

    def __init__(self, log_every_n_steps: int) -> None:
        self.every = max(1, log_every_n_steps)
        self._reset(None)

    def _reset(self, now: float | None) -> None:
        self._window_start = now
        self._last_end = now
        self._images = 0
        self._steps = 0
        self._wait = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._reset(None)  # the first step of an epoch includes loader start-up: not counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self._wait += now - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._window_start is None:
            self._reset(now)
            return
        self._images += len(batch[1])
        self._steps += 1
        self._last_end = now
        if trainer.global_step % self.every:
            return
        device = pl_module.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            now = time.perf_counter()
        elapsed = max(now - self._window_start, 1e-9)
        per_device = self._images / elapsed
        pl_module.log_dict(
            {
                "perf/images_per_s": per_device * trainer.world_size,
                "perf/images_per_s_per_device": per_device,
                "perf/step_time_s": elapsed / self._steps,
                "perf/data_wait_frac": min(1.0, self._wait / elapsed),
                "perf/peak_memory_mb": peak_memory_mb(device),
            },
            on_step=True,
            on_epoch=False,
            rank_zero_only=True,
        )
        self._reset(time.perf_counter())


class LastCheckpoint(L.Callback):
    """`last.ckpt` every N optimizer steps and at every epoch end (after validation).

    Written by `checkpoint_io.AtomicCheckpointIO` (beside the target, then os.replace: the previous
    last.ckpt stays whole until the new one is); the run's journal is fsynced first, so every metric
    the checkpoint covers is on disk before the checkpoint exists. (Lightning hands the last step's
    own metrics to the logger just after this hook; the run's logger fsyncs again once it has them,
    see `tracking.RunLogger.flush`.)
    """

    def __init__(self, ckpt_dir: Path, every_n_steps: int, keep_latest_k: int = 0) -> None:
        self.path = Path(ckpt_dir) / LAST
        self.every = max(1, every_n_steps)
        self.keep_latest_k = keep_latest_k
        self._saved_at = -1

    def save(self, trainer) -> None:
        if trainer.global_step == self._saved_at:
            return
        guard = getattr(trainer.lightning_module, "raise_if_nonfinite", None)
        if guard is not None:
            guard()  # never checkpoint weights a NaN/inf step has touched
        for logger in trainer.loggers:
            getattr(logger, "flush", logger.save)()
        trainer.save_checkpoint(self.path, weights_only=False)
        if self.keep_latest_k and trainer.is_global_zero:
            from phiscale.train.checkpoint_io import keep_latest

            keep_latest(self.path, trainer.global_step, self.keep_latest_k)
        self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save(trainer)

class SignalCheckpoint(L.Callback):
    """SIGUSR1 / SIGTERM: save `last.ckpt`, stop cleanly, and (on SLURM, for SIGUSR1) requeue.

    The handlers are in place from the moment the Trainer is built (a signal during model or data
    set-up stops the run at its first step) and replace Lightning's at train start. All ranks agree
    on stopping at the same step, so the checkpoint is collective-safe under DDP and DeepSpeed.
    The part-epoch the signal interrupts is not validated: its score is no epoch result and must
    never replace best.ckpt (the best checkpoint is only written after a validation). A signal on
    an epoch's last batch leaves a whole epoch, which is validated before the stop.
    """

    SIGNALS = (signal.SIGUSR1, signal.SIGTERM)

    def __init__(self, last: LastCheckpoint, requeue_on_slurm: bool = True) -> None:
        self.last = last
        self.requeue_on_slurm = requeue_on_slurm
        self.received: int | None = None
        self.stopped_by_signal = False
        self._previous = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        self._install()

    def _handler(self, signum, frame) -> None:
        self.received = signum

    def _install(self) -> None:
        for sig in self.SIGNALS:
            signal.signal(sig, self._handler)

    def restore(self) -> None:
        """Put back the handlers that were there before this run (for the next run in the process)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def on_train_start(self, trainer, pl_module) -> None:
        self._install()  # Lightning registered its own at fit start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            # Agreeing is a collective (a device sync on GPUs): once per logging interval, not per step;
            # SLURM's warning comes minutes ahead, so a few steps' delay costs nothing.
            if trainer.global_step % max(1, trainer.log_every_n_steps):
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        name = signal.Signals(self.received).name if self.received else "a signal on another rank"
        rank_zero_info(f"phiscale: received {name} at step {trainer.global_step}: saving {self.last.path}")
        self.last.save(trainer)
        self.stopped_by_signal = True
        if batch_idx + 1 < trainer.num_training_batches:
            trainer.limit_val_batches = 0  # no validation of the interrupted part-epoch
        # else the epoch is whole: it is validated before the stop (a resume starts the next epoch)
        trainer.should_stop = True

    @property
    def should_requeue(self) -> bool:
        """USR1 (SLURM's time-limit warning, `--signal=B:USR1@N`) inside a SLURM job: requeue it."""
        from phiscale.slurm.env import slurm_env

        return (
            self.stopped_by_signal
            and self.requeue_on_slurm
            and self.received == signal.SIGUSR1
            and slurm_env() is not None
        )


def progressive_resolution(epoch: int, max_epochs: int, *, final: int, min_ratio: float, start: float, end: float,
                           minimum: int = 32) -> int:
    """Train resolution for `epoch`: ramps linearly from min_ratio·final to final between the
    `start` and `end` fractions of training (the schedule of ffcv-imagenet), in steps of 8 px,
    never below `minimum` (the network's total stride)."""
    low = max(minimum, int(round(final * min_ratio / 8)) * 8)
    first, last = start * max_epochs, end * max_epochs
    if epoch <= first or last <= first:
        res = low if epoch <= first and last > first else final
    elif epoch >= last:
        res = final
    else:
        res = low + (final - low) * (epoch - first) / (last - first)
    return min(final, max(minimum, int(round(res / 8)) * 8))


class ProgressiveResize(L.Callback):
    """Sets the train loader's resolution at each epoch start."""

    def __init__(self, *, final: int, min_ratio: float, start: float, end: float, minimum: int = 32) -> None:
        self.kwargs: dict[str, Any] = dict(final=final, min_ratio=min_ratio, start=start, end=end, minimum=minimum)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        res = progressive_resolution(trainer.current_epoch, trainer.max_epochs or 1, **self.kwargs)
        trainer.datamodule.train_loader.set_resolution(res)
        pl_module.log("train/resolution", float(res), on_step=False, on_epoch=True, rank_zero_only=True)


class ShareRunId(L.Callback):
    """Rank 0 owns the MLflow run; every rank learns its id once the process group exists
    (`pl_module.mlflow_run_id`, and `PHISCALE_MLFLOW_RUN_ID` for code the rank runs)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        logger = trainer.logger
        run_id = trainer.strategy.broadcast(getattr(logger, "run_id", None) if trainer.is_global_zero else None, src=0)
        pl_module.mlflow_run_id = run_id
        if run_id:
            os.environ["PHISCALE_MLFLOW_RUN_ID"] = run_id
        if trainer.world_size > 1:
            print(f"phiscale: rank {trainer.global_rank}/{trainer.world_size} logs to MLflow run {run_id} via rank 0",
                  flush=True)


class SendFromFirstStep(L.Callback):
    """A single-process run sends its journal to MLflow from its first step on (`RunLogger.hold_sending`):
    the sender thread's MLflow import and store set-up, about 2 s of CPU, would otherwise share the GIL
    and the two cores with the run's own start-up (issue 31). DDP ranks learn the run's id at set-up
    (ShareRunId), so their rank 0 sends from the start."""

    def __init__(self, logger) -> None:
        self.logger = logger
        logger.hold_sending()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.logger.start_sending()  # once; later calls return at once


class CollectorFromFirstStep(L.Callback):
    """The garbage collector runs again after the first step: phiscale-train keeps it off while it imports
    and builds (`phiscale.pause_for_start_up`), and what exists by then is frozen, not collected."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        end_start_up_pause()  # once; later calls return at once


class ProgressLines(L.Callback):
    """One plain line per logging interval (epoch, step/total, loss, images/s, ETA) instead of a
    redrawn progress bar: what a SLURM .out file or any non-terminal stdout can show."""

    def __init__(self, every_n_steps: int, print_fn=print) -> None:
        self.every = max(1, every_n_steps)
        self.print = print_fn
        self._start: tuple[float, int] | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        step, now = trainer.global_step, time.perf_counter()
        if self._start is None:
            self._start = (now, step)
            return
        if step % self.every:
            return
        total = trainer.estimated_stepping_batches if trainer.max_steps == -1 else trainer.max_steps
        done_here = step - self._start[1]
        per_step = (now - self._start[0]) / max(done_here, 1)
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}", f"step {step}/{int(total)}"]
        if "train/loss" in metrics:
            parts.append(f"loss {float(metrics['train/loss']):.4f}")
        if "perf/images_per_s" in metrics:
            parts.append(f"{float(metrics['perf/images_per_s']):.0f} images/s")
        parts.append(f"eta {format_duration(per_step * max(0, total - step))}")
        self.print("phiscale: " + ", ".join(parts), flush=True)


def format_duration(seconds: float) -> str:
    """`3h02m`, `12m05s`, `42s`."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class StartAtStep(L.Callback):
    """resume=weights: a fresh optimizer and loops, but the run's step count continues after the
    checkpoint's (`step`), so nothing is logged at a step the run already logged; the run's best
    val top-1 and its best checkpoint carry over (`best_val_top1`, `best_state`: the val/top1
    ModelCheckpoint's saved state)."""

    def __init__(self, step: int, best_val_top1: float = 0.0, best_state: dict | None = None) -> None:
        self.step, self.best_val_top1, self.best_state = int(step), float(best_val_top1), best_state

    def on_train_start(self, trainer, pl_module) -> None:
        loop = trainer.fit_loop.epoch_loop
        if trainer.global_step >= self.step:  # a restart of this stage: its own checkpoint's steps
            return
        counter = loop.automatic_optimization.optim_progress.optimizer.step.total
        counter.ready = counter.completed = self.step
        loop._batches_that_stepped = self.step  # the step Lightning logs with
        pl_module.best_val_top1 = max(float(getattr(pl_module, "best_val_top1", 0.0)), self.best_val_top1)
        for callback in trainer.checkpoint_callbacks:
            same_dir = self.best_state is not None and self.best_state.get("dirpath") == callback.dirpath
            if same_dir and getattr(callback, "monitor", None) == "val/top1":  # another run's best stays its own
                callback.load_state_dict(self.best_state)
