"""Train fixtures: a tiny real classifier on fixed batches, a quiet CPU Trainer, and the process's
signal handlers put back after a run that installed SignalCheckpoint's."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from omegaconf import OmegaConf
from support.batches import FixedBatches
from torch import nn

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_classifier():
    """`tiny_classifier(num_classes=10, **ImageClassifier kwargs)`: a one-conv network in an
    ImageClassifier with the repository's sgd_cosine recipe."""
    from phiscale.train.module import ImageClassifier

    optim = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optim" / "sgd_cosine.yaml"))

    def make(num_classes: int = 10, **kwargs) -> ImageClassifier:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
        return ImageClassifier(model, optim_cfg=kwargs.pop("optim_cfg", optim), global_batch_size=8, **kwargs)

    return make


@pytest.fixture
def fixed_batches():
    """`fixed_batches(n, batch=8, res=16, num_classes=10, seed=0)`: a loader of n random batches."""

    def make(n: int, batch: int = 8, res: int = 16, num_classes: int = 10, seed: int = 0) -> FixedBatches:
        g = torch.Generator().manual_seed(seed)
        return FixedBatches([(torch.randn(batch, 3, res, res, generator=g),
                              torch.randint(0, num_classes, (batch,), generator=g)) for _ in range(n)])

    return make


@pytest.fixture
def cpu_trainer(tmp_path):
    """`cpu_trainer(**Trainer kwargs)`: one CPU process, no logger, bars, summary or sanity check."""

    def make(**kwargs) -> L.Trainer:
        defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=str(tmp_path), max_epochs=1)
        return L.Trainer(**(defaults | kwargs))

    return make


@pytest.fixture
def restore_signals():
    """SignalCheckpoint replaces the SIGUSR1/SIGTERM handlers of the whole process: put them back."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)
