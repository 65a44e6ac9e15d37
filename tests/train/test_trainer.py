"""The Trainer a plan gets (strategy, callbacks, SLURM plugin) and a console that says each line once."""

from __future__ import annotations

import os
import subprocess
import sys

import lightning.pytorch as L
import pytest
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

from phiscale.train.callbacks import (
    LastCheckpoint,
    ProgressiveResize,
    ShareRunId,
    SignalCheckpoint,
    ThroughputMonitor,
)
from phiscale.train.plan import make_plan
from phiscale.train.trainer import build_trainer, slurm_plugins

# What a task of `sbatch --ntasks=1` sees (Lightning's SLURMEnvironment.detect() needs SLURM_NTASKS).
SLURM_TASK = {"SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "train", "SLURM_NTASKS": "1", "SLURM_NNODES": "1",
              "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}


def trainer_for(cfg, *extra_callbacks):
    plan = make_plan(cfg)
    trainer, stops = build_trainer(cfg, plan, logger=False, extra_callbacks=extra_callbacks)
    return plan, trainer, stops


def of_type(trainer: L.Trainer, kind: type) -> list:
    return [c for c in trainer.callbacks if type(c) is kind]


def test_the_trainer_carries_our_callbacks_and_the_configured_loop(fast_cfg):
    extra = L.Callback()
    plan, trainer, stops = trainer_for(fast_cfg(), extra)
    for kind in (ShareRunId, ThroughputMonitor, LastCheckpoint, SignalCheckpoint):
        assert len(of_type(trainer, kind)) == 1, f"expected one {kind.__name__} in {trainer.callbacks}"
    assert of_type(trainer, ProgressiveResize) == [], "progressive resizing is off by default"
    assert extra in trainer.callbacks
    assert stops.signals is of_type(trainer, SignalCheckpoint)[0]
    assert of_type(trainer, LastCheckpoint)[0].path == plan.ckpt_dir / "last.ckpt"
    assert stops.best.dirpath == str(plan.ckpt_dir) and stops.best.monitor == "val/top1" and stops.best.mode == "max"
    assert (trainer.max_epochs, trainer.log_every_n_steps, trainer.num_sanity_val_steps) == (2, 2, 0)
    assert trainer.limit_train_batches == 6 and trainer.default_root_dir == str(plan.output_dir)
    assert isinstance(trainer.strategy, SingleDeviceStrategy) and trainer.precision == "32-true"


def test_ddp_on_cpu_uses_gloo(fast_cfg):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores for trainer.devices=2 on CPU")
    _, trainer, _ = trainer_for(fast_cfg("trainer=ddp", "trainer.accelerator=cpu"))
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy.process_group_backend == "gloo"
    assert trainer.num_devices == 2 and trainer.world_size == 2


def test_progressive_resizing_ends_at_the_train_resolution_and_never_goes_below_the_stride(fast_cfg):
    plan, trainer, _ = trainer_for(fast_cfg("progressive.enabled=true", "train_resolution=64"))
    (resize,) = of_type(trainer, ProgressiveResize)
    assert resize.kwargs == {"final": 64, "min_ratio": 0.7, "start": 0.1, "end": 0.85,
                             "minimum": plan.scale.total_stride}


def test_slurm_plugin_only_inside_a_slurm_job_and_it_leaves_requeueing_to_us(monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert slurm_plugins() == []
    for key, value in SLURM_TASK.items():
        monkeypatch.setenv(key, value)
    (plugin,) = slurm_plugins()
    assert plugin.auto_requeue is False, "SignalCheckpoint requeues; Lightning's own requeue would do it twice"


# A Trainer built after quiet_console(), with Hydra's root handler (or none) in place.
CONSOLE = """
import logging, sys, warnings
if sys.argv[1] == "root-handler":
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="ROOT %(message)s")
import lightning.pytorch as L
from phiscale.train.trainer import quiet_console
quiet_console()
L.Trainer(accelerator="cpu", devices=1, logger=False, limit_train_batches=1, enable_checkpointing=False,
          enable_progress_bar=False, enable_model_summary=False)
warnings.warn("The `srun` command is available on your system but is not used. HINT: prepend srun")
"""


def console(root: str, slurm: bool) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | (SLURM_TASK if slurm else {})
    result = subprocess.run([sys.executable, "-c", CONSOLE, root], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.parametrize(("root", "slurm"), [("root-handler", False), ("no-root-handler", True)])
def test_lightning_says_each_line_once_and_the_srun_hint_only_inside_slurm(root, slurm):
    out = console(root, slurm)
    assert out.count("`Trainer(limit_train_batches=1)` was configured so 1 batch per epoch") == 1, out
    assert "Tip:" not in out and "litlogger" not in out, out
    assert "GPU available" not in out and "TPU available" not in out, out
    hint = "The `srun` command is available on your system but is not used" in out
    assert hint == slurm, "the srun hint is noise outside SLURM, and a real hint inside a SLURM job"
