"""The LightningModule: top-k counting, exact val accuracy over uneven batches, the non-finite
loss stop, and the RNG state a checkpoint carries."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from support.batches import FixedBatches

from phiscale.errors import PhiscaleError
from phiscale.train.module import NonFiniteLoss, topk_correct


def test_topk_correct_counts_labels_among_the_top_logits():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5], [0.5, 0.4, 0.1]])
    labels = torch.tensor([1, 1, 1, 2])
    top1, top2 = topk_correct(logits, labels, ks=(1, 2))
    assert (int(top1), int(top2)) == (1, 3)  # sample 0 by top-1; 1 and 2 by top-2; sample 3 never
    top1, top5 = topk_correct(logits, labels)  # k=5 is capped at the 3 classes: every label is a hit
    assert (int(top1), int(top5)) == (1, 4)


def test_val_accuracy_is_exact_over_uneven_batches(tiny_classifier, cpu_trainer, fixed_batches):
    """Per-batch means averaged would weight the short last batch like a full one; the module sums."""
    module = tiny_classifier()
    loader = fixed_batches(3, batch=5)
    loader.batches[-1] = tuple(t[:2] for t in loader.batches[-1])  # 5 + 5 + 2 images
    (metrics,) = cpu_trainer().validate(module, dataloaders=loader, verbose=False)
    module.eval()
    with torch.no_grad():
        hits = [topk_correct(module(x), y) for x, y in loader]
        losses = [torch.nn.functional.cross_entropy(module(x), y, reduction="sum") for x, y in loader]
    assert metrics["val/top1"] == pytest.approx(sum(float(h[0]) for h in hits) / 12)
    assert metrics["val/top5"] == pytest.approx(sum(float(h[1]) for h in hits) / 12)
    assert metrics["val/loss"] == pytest.approx(float(sum(losses)) / 12, rel=1e-5)
    assert module.best_val_top1 == pytest.approx(metrics["val/top1"]) == metrics["val/top1_best"]


def test_ema_weights_are_validated_too(tiny_classifier, cpu_trainer, fixed_batches):
    module = tiny_classifier(optim_cfg=dict(tiny_classifier().optim_cfg, ema_decay=0.99))
    (metrics,) = cpu_trainer().validate(module, dataloaders=fixed_batches(2), verbose=False)
    assert {"val_ema/top1", "val_ema/top5", "val_ema/loss"} <= set(metrics)
    assert metrics["val_ema/top1"] == metrics["val/top1"], "an EMA never updated equals the model"


def test_a_non_finite_loss_stops_training_with_one_line(tiny_classifier, cpu_trainer, fixed_batches):
    loader = fixed_batches(3)
    loader.batches[1][0][:] = float("inf")
    with pytest.raises(NonFiniteLoss) as err:
        cpu_trainer().fit(tiny_classifier(), train_dataloaders=loader)
    message = str(err.value)
    assert message.startswith("loss became non-finite (nan/inf) by step 1 (epoch 0)") and "\n" not in message
    assert "optim.lr_per_256" in message and isinstance(err.value, PhiscaleError)


def test_fp16_batches_meet_fp32_weights_outside_autocast(tiny_classifier):
    module = tiny_classifier().eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(module(images.half()), module(images.half().float()))


class RecordTrainingBatch(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.images, self.targets = batch


def test_augmented_training_batches_are_normalised_soft_targets_and_validation_is_untouched(
        tiny_classifier, cpu_trainer):
    from phiscale.augment import BatchAugment

    g = torch.Generator().manual_seed(0)
    uint8 = [(torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=g),
              torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
    augment = BatchAugment("randaugment", mixup=0.2, num_classes=10, label_smoothing=0.1, seed=0)
    module = tiny_classifier(augment=augment, mean=[128.0] * 3, std=[64.0] * 3)
    seen = RecordTrainingBatch()
    trainer = cpu_trainer(callbacks=[seen], limit_val_batches=1)
    val = [(torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,), generator=g))]
    trainer.fit(module, train_dataloaders=FixedBatches(uint8), val_dataloaders=FixedBatches(val))
    assert seen.images.dtype == torch.float32 and seen.images.abs().max() <= 128 / 64 + 1e-6, "normalised"
    assert seen.targets.shape == (8, 10) and torch.allclose(seen.targets.sum(1), torch.ones(8)), "soft targets"
    assert module.on_after_batch_transfer(val[0], 0)[0] is val[0][0], "outside training the batch passes through"


def test_an_inactive_augmentation_changes_nothing(tiny_classifier):
    from phiscale.augment import BatchAugment

    assert tiny_classifier(augment=BatchAugment("none", num_classes=10)).augment is None
