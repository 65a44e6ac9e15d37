"""Training callbacks on tiny real Trainer runs: throughput numbers, last/signal checkpoints,
progressive resizing and the mid-epoch resume skip."""

from __future__ import annotations

import csv
import os
import signal

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from phiscale.train.callbacks import (
    LastCheckpoint,
    ProgressiveResize,
    ProgressLines,
    SendFromFirstStep,
    SignalCheckpoint,
    ThroughputMonitor,
    format_duration,
    progressive_resolution,
)
from phiscale.train.datamodule import ImageDataModule
from phiscale.train.module import NonFiniteLoss

PERF = ("perf/images_per_s", "perf/images_per_s_per_device", "perf/step_time_s", "perf/data_wait_frac",
        "perf/peak_memory_mb")


class SendSignal(L.Callback):
    """Sends `sig` to this process when the batch of optimizer step `at_step` starts."""

    def __init__(self, sig: int, at_step: int) -> None:
        self.sig, self.at_step = sig, at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.sig)


class RecordBatches(L.Callback):
    """The labels and image side of every train batch, per epoch."""

    def __init__(self) -> None:
        self.labels: list[list[int]] = []
        self.sides: dict[int, set[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.labels.append(batch[1].tolist())
        self.sides.setdefault(trainer.current_epoch, set()).add(batch[0].shape[-1])


def digits_datamodule(fast_cfg, train_resolution: int = 32) -> ImageDataModule:
    """The embedded digits through the torch loader (no worker processes), as a run would build it."""
    data = OmegaConf.to_container(fast_cfg("data.loader=torch", "data.num_workers=0").data, resolve=True)
    return ImageDataModule(data, train_resolution=train_resolution, eval_resolution=32, seed=0)


# ---------------------------------------------------------------- progressive resizing -----
def test_progressive_schedule_ramps_in_8_px_steps_between_start_and_end():
    schedule = [progressive_resolution(e, 10, final=224, min_ratio=0.5, start=0.1, end=0.8) for e in range(10)]
    assert schedule[:2] == [112, 112], "min_ratio * final until `start`"
    assert schedule[8:] == [224, 224], "final from `end` on"
    assert schedule == sorted(schedule) and all(r % 8 == 0 for r in schedule)
    assert schedule[4] == 160  # 112 + 112 * (4 - 1) / (8 - 1), to a multiple of 8


def test_progressive_schedule_never_goes_below_the_minimum_nor_above_final():
    assert {progressive_resolution(e, 4, final=40, min_ratio=0.25, start=0, end=1, minimum=32)
            for e in range(4)} <= {32, 40}
    assert progressive_resolution(0, 4, final=37, min_ratio=0.5, start=0, end=1, minimum=32) == 32
    assert progressive_resolution(3, 4, final=37, min_ratio=0.5, start=0, end=1, minimum=32) <= 37
    assert progressive_resolution(0, 10, final=64, min_ratio=0.5, start=0.5, end=0.5) == 64, "no ramp: final"


def test_progressive_resize_sets_the_train_loader_resolution_each_epoch(fast_cfg, tiny_classifier, cpu_trainer):
    record = RecordBatches()
    resize = ProgressiveResize(final=64, min_ratio=0.5, start=0.0, end=1.0, minimum=16)
    trainer = cpu_trainer(max_epochs=3, limit_train_batches=2, limit_val_batches=0, callbacks=[resize, record])
    trainer.fit(tiny_classifier(), datamodule=digits_datamodule(fast_cfg, train_resolution=64))
    assert record.sides == {0: {32}, 1: {40}, 2: {56}}  # 32 -> 64 over three epochs, in steps of 8
    assert float(trainer.callback_metrics["train/resolution"]) == 56.0


# ---------------------------------------------------------------- throughput -----
def test_throughput_numbers_agree_with_the_batch_size(tmp_path, tiny_classifier, fixed_batches, cpu_trainer):
    logger = CSVLogger(tmp_path, name="perf")
    trainer = cpu_trainer(logger=logger, log_every_n_steps=2, callbacks=[ThroughputMonitor(2)])
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(9, batch=8))
    with open(logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("perf/images_per_s")]
    assert rows, "no perf/* metrics logged"
    for row in rows:
        perf = {k: float(row[k]) for k in PERF}
        # images / elapsed times elapsed / steps: the images of one step, whatever the machine's speed
        assert perf["perf/images_per_s"] * perf["perf/step_time_s"] == pytest.approx(8.0, rel=1e-6)
        assert perf["perf/images_per_s_per_device"] == perf["perf/images_per_s"]  # one device
        assert 0.0 <= perf["perf/data_wait_frac"] <= 1.0
        assert perf["perf/peak_memory_mb"] > 10, "peak resident memory of this process, in MiB"


# ---------------------------------------------------------------- checkpoints and signals -----
class CountValidations(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def on_validation_epoch_end(self, trainer, pl_module):
        self.epochs.append(trainer.current_epoch)


@pytest.mark.parametrize(("at_step", "validated"), [(5, []), (7, [0])], ids=["mid-epoch", "last-batch"])
def test_a_signal_skips_the_validation_of_a_part_epoch_but_not_of_a_whole_one(
        tmp_path, tiny_classifier, fixed_batches, cpu_trainer, restore_signals, at_step, validated):
    """A signal on the epoch's last batch stops after that epoch's validation: the resume starts the
    next epoch, so skipping it would lose that epoch's val/top1 for good."""
    last = LastCheckpoint(tmp_path / "checkpoints", every_n_steps=100)
    counted = CountValidations()
    trainer = cpu_trainer(callbacks=[last, SignalCheckpoint(last), SendSignal(signal.SIGUSR1, at_step), counted],
                          max_epochs=2)
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(8), val_dataloaders=fixed_batches(2))
    assert trainer.global_step == at_step + 1 and counted.epochs == validated


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM], ids=["SIGUSR1", "SIGTERM"])
def test_a_signal_saves_last_ckpt_and_stops_at_that_step(tmp_path, tiny_classifier, fixed_batches, cpu_trainer,
                                                         restore_signals, monkeypatch, sig):
    last = LastCheckpoint(tmp_path / "checkpoints", every_n_steps=100)
    signals = SignalCheckpoint(last)
    trainer = cpu_trainer(callbacks=[last, signals, SendSignal(sig, at_step=2)])
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(8))
    assert (signals.received, signals.stopped_by_signal, trainer.global_step) == (sig, True, 3)
    assert torch.load(last.path, weights_only=False)["global_step"] == 3, "last.ckpt is the step it stopped at"
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert not signals.should_requeue, "outside SLURM nothing is requeued"
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert signals.should_requeue == (sig == signal.SIGUSR1), "only SLURM's time-limit warning (USR1) requeues"


def test_last_ckpt_every_n_steps_and_at_epoch_end(tmp_path, tiny_classifier, fixed_batches, cpu_trainer):
    saved = []

    class Spy(LastCheckpoint):
        def save(self, trainer):
            before = self._saved_at
            super().save(trainer)
            if self._saved_at != before:
                saved.append(trainer.global_step)

    trainer = cpu_trainer(max_epochs=2, callbacks=[Spy(tmp_path, every_n_steps=3)])
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(5))
    assert saved == [3, 5, 6, 9, 10], "every 3 steps, and once per epoch end (5 steps an epoch)"
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["global_step"] == 10


def test_a_non_finite_loss_leaves_last_ckpt_as_the_last_good_finite_state(tmp_path, tiny_classifier,
                                                                           fixed_batches, cpu_trainer):
    batches = fixed_batches(4)
    batches.batches[2][0][0, 0, 0, 0] = float("nan")  # the third batch poisons the loss
    last = LastCheckpoint(tmp_path, every_n_steps=1)
    with pytest.raises(NonFiniteLoss, match="by step 2.*last.ckpt holds the last good state"):
        cpu_trainer(callbacks=[last]).fit(tiny_classifier(), train_dataloaders=batches)
    saved = torch.load(last.path, weights_only=False)
    assert saved["global_step"] == 2, "the last checkpoint is the one before the bad step"
    bad = [k for k, v in saved["state_dict"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert bad == [], f"non-finite tensors in the last good checkpoint: {bad}"
    assert not list(tmp_path.glob("nonfinite*")), "no checkpoint is written after a bad step"


def test_no_checkpoint_is_written_once_a_loss_went_bad(tmp_path, tiny_classifier, fixed_batches, cpu_trainer):
    """On CUDA the loss check is deferred to log steps; the checkpoint itself checks first."""
    module = tiny_classifier()
    trainer = cpu_trainer()
    trainer.fit(module, train_dataloaders=fixed_batches(1))
    module._nonfinite = torch.tensor(True)
    with pytest.raises(NonFiniteLoss):
        LastCheckpoint(tmp_path, every_n_steps=1).save(trainer)
    assert not (tmp_path / "last.ckpt").exists()


def test_a_mid_epoch_resume_sees_the_rest_of_that_epoch(tmp_path, fast_cfg, tiny_classifier, cpu_trainer,
                                                         restore_signals):
    uninterrupted = RecordBatches()
    cpu_trainer(limit_train_batches=6, limit_val_batches=0, callbacks=[uninterrupted]).fit(
        tiny_classifier(), datamodule=digits_datamodule(fast_cfg))

    last = LastCheckpoint(tmp_path / "checkpoints", every_n_steps=100)
    stopped = cpu_trainer(limit_train_batches=6, limit_val_batches=0,
                          callbacks=[last, SignalCheckpoint(last), SendSignal(signal.SIGTERM, at_step=2)])
    stopped.fit(tiny_classifier(), datamodule=digits_datamodule(fast_cfg))
    assert stopped.global_step == 3

    resumed = RecordBatches()
    trainer = cpu_trainer(limit_train_batches=6, limit_val_batches=0, callbacks=[resumed])
    trainer.fit(tiny_classifier(), datamodule=digits_datamodule(fast_cfg), ckpt_path=str(last.path))
    assert trainer.global_step == 6
    assert resumed.labels == uninterrupted.labels[3:6], "the resumed run must see batches 3-5, not 0-2 again"


def test_progress_lines_say_epoch_step_loss_throughput_and_eta(tiny_classifier, fixed_batches, cpu_trainer):
    lines: list[str] = []
    cpu_trainer(callbacks=[ProgressLines(2, print_fn=lambda line, flush: lines.append(line))], max_epochs=2,
                log_every_n_steps=2).fit(tiny_classifier(), train_dataloaders=fixed_batches(4))
    assert lines and all(line.startswith("phiscale: epoch ") for line in lines), lines
    assert "step 8/8" in lines[-1] and "eta 0s" in lines[-1] and "loss " in lines[-1], lines[-1]
    assert "\r" not in "".join(lines), "plain lines, not a redrawn bar"


def test_the_held_logger_starts_sending_when_the_first_step_is_done(tiny_classifier, fixed_batches, cpu_trainer):
    class Logger:
        held, started_at = False, []

        def hold_sending(self):
            self.held = True

        def start_sending(self):
            self.started_at.append(trainer.global_step)

    logger = Logger()
    callback = SendFromFirstStep(logger)
    assert logger.held, "held before the logger opens"
    trainer = cpu_trainer(callbacks=[callback], max_steps=2)
    trainer.fit(tiny_classifier(), train_dataloaders=fixed_batches(2))
    assert logger.started_at[0] == 1, "asked to start once step 1 is done, not before"


def test_durations_read_as_a_person_would_write_them():
    assert [format_duration(s) for s in (42, 725, 10_920)] == ["42s", "12m05s", "3h02m"]
