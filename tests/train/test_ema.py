"""ModelEma: the closed-form average, copied buffers, no gradients, eval mode, wrapped models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from phiscale.errors import PhiscaleError
from phiscale.train.ema import ModelEma


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_ema_weights_equal_the_closed_form_average():
    model = tiny_model()
    start = model[0].weight.detach().clone()
    ema = ModelEma(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model[0].weight.fill_(1.0)  # live weights jump to 1 and stay there
    for step in range(5):
        ema.update(model, step)
    # ema_k = 1 + (ema_0 - 1) * 0.9^k
    assert torch.allclose(ema.module[0].weight, 1.0 + (start - 1.0) * 0.9**5, atol=1e-6)


def test_ema_decay_warmup_follows_tf_num_updates_rule():
    model = tiny_model()
    start = model[0].bias.detach().clone()
    ema = ModelEma(model, decay=0.9999)
    assert ema.decay_at(0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema.decay_at(10**6) == 0.9999
    with torch.no_grad():
        model[0].bias.fill_(2.0)
    expected = start
    for step in range(3):
        ema.update(model, step)
        d = (1 + step) / (10 + step)
        expected = d * expected + (1 - d) * 2.0
    assert torch.allclose(ema.module[0].bias, expected, atol=1e-6)


def test_ema_copies_batchnorm_running_statistics():
    model = tiny_model()
    ema = ModelEma(model, decay=0.9999)
    model.train()
    model(torch.randn(8, 3) * 5 + 3)  # moves BN running stats
    ema.update(model, step=0)
    bn, ema_bn = model[1], ema.module[1]
    assert torch.equal(ema_bn.running_mean, bn.running_mean)
    assert torch.equal(ema_bn.running_var, bn.running_var)
    assert ema_bn.num_batches_tracked.item() == 1


def test_ema_has_no_gradients_and_stays_in_eval_mode_inside_a_training_parent():
    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = tiny_model()
            self.ema = ModelEma(self.model, decay=0.99)

    parent = Parent()
    parent.train()
    assert parent.model.training
    assert not any(m.training for m in parent.ema.modules())
    assert not any(p.requires_grad for p in parent.ema.parameters())
    parent.ema.update(parent.model, step=0)
    assert all(p.grad_fn is None and p.grad is None for p in parent.ema.parameters())
    assert not parent.ema(torch.randn(4, 3)).requires_grad

    # It is a submodule: the LightningModule checkpoint carries it and restores it.
    state = parent.state_dict()
    assert "ema.module.0.weight" in state and "ema.module.1.running_mean" in state
    other = Parent()
    other.load_state_dict(state)
    assert torch.equal(other.ema.module[0].weight, parent.ema.module[0].weight)


def test_ema_accepts_a_wrapped_model_and_another_dtype():
    model = tiny_model()
    ema = ModelEma(nn.DataParallel(model), decay=0.5, warmup=False)  # DataParallel, like DDP, has `.module`
    assert isinstance(ema.module, nn.Sequential)
    ema.double()  # the average may live in another dtype (or device) than the live model
    with torch.no_grad():
        model[0].weight.fill_(4.0)
    before = ema.module[0].weight.clone()
    ema.update(nn.DataParallel(model), step=0)
    assert ema.module[0].weight.dtype == torch.float64
    assert torch.allclose(ema.module[0].weight, 0.5 * before + 0.5 * 4.0)


def test_ema_rejects_a_decay_outside_0_1():
    with pytest.raises(PhiscaleError, match="ema_decay=1.0"):
        ModelEma(tiny_model(), decay=1.0)
