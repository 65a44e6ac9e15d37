"""On a CUDA device, the LightningModule trains in bf16-mixed and fp32 from the FFCV CUDA loader's fp16 batches."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch

from phiscale.models import build_model
from phiscale.train.callbacks import ThroughputMonitor
from phiscale.train.module import ImageClassifier

pytestmark = pytest.mark.gpu

OPTIM = {"name": "sgd_cosine", "lr_per_256": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 4e-5,
         "warmup_epochs": 0, "warmup_lr_ratio": 0.0, "min_lr_ratio": 0.0, "label_smoothing": 0.1,
         "ema_decay": 0.99, "ema_every_n_steps": 1}


class Fixed:
    """The same few fp16 channels_last batches, on the GPU, every epoch (to overfit)."""

    def __init__(self, n_batches: int = 4, batch: int = 32, res: int = 64):
        g = torch.Generator(device="cuda").manual_seed(0)
        self.batches = [
            (torch.randn(batch, 3, res, res, device="cuda", generator=g, dtype=torch.float16)
             .contiguous(memory_format=torch.channels_last),
             torch.randint(0, 10, (batch,), device="cuda", generator=g))
            for _ in range(n_batches)
        ]

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)


@pytest.fixture(autouse=True)
def needs_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_trains_on_fp16_cuda_batches(precision, tmp_path):
    torch.manual_seed(0)
    model = build_model("efficientnet_b0", num_classes=10, dropout=0.0, drop_path_rate=0.0)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.momentum = 0.1  # a 60-step run: running statistics must keep up with the weights
    module = ImageClassifier(model, optim_cfg=OPTIM, global_batch_size=32)
    data = Fixed()
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(accelerator="gpu", devices=1, precision=precision, max_epochs=15, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        callbacks=[ThroughputMonitor(5), Record()], limit_val_batches=2)
    trainer.fit(module, train_dataloaders=data, val_dataloaders=data)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert sum(losses[-4:]) < sum(losses[:4]), f"{precision}: loss did not fall on fixed batches: {losses}"
    metrics = trainer.callback_metrics
    assert 0.0 <= float(metrics["val/top1"]) <= 1.0 and 0.0 <= float(metrics["val_ema/top1"]) <= 1.0
    assert trainer.callback_metrics["perf/peak_memory_mb"] > 0
