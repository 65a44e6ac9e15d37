"""RMSpropTF, parameter groups, the optimiser builder and the per-step LR schedule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from phiscale.errors import PhiscaleError
from phiscale.train.optim import (
    RMSpropTF,
    build_lr_schedule,
    build_optimizer,
    lr_multiplier,
    param_groups,
    resolved_lr,
    resolved_warmup_steps,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "optim"


def optim_cfg(recipe: str, **overrides):
    cfg = OmegaConf.load(CONF / f"{recipe}.yaml")
    OmegaConf.set_struct(cfg, True)  # as Hydra composes it: unknown keys raise
    for key, value in overrides.items():
        cfg[key] = value
    return cfg


def conv_bn_linear() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


# ---------------------------------------------------------------------------------------- RMSpropTF


def test_rmsprop_tf_first_step_matches_hand_computed_tf_value():
    # p=1, g=1: ms = 0.9*1 + 0.1*1 = 1 (starts at ONE); mom = 0.1 * 1/sqrt(1 + 1e-3); p = 1 - mom.
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = RMSpropTF([p], lr=0.1, decay=0.9, momentum=0.9, eps=1e-3)
    p.grad = torch.ones_like(p)
    opt.step()
    assert p.item() == pytest.approx(1.0 - 0.1 / math.sqrt(1.001), abs=1e-12)  # 0.90005...
    # torch.optim.RMSprop (ms from 0, eps outside the sqrt) would step ~0.316: the TF semantics matter.
    q = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    torch_opt = torch.optim.RMSprop([q], lr=0.1, alpha=0.9, momentum=0.9, eps=1e-3)
    q.grad = torch.ones_like(q)
    torch_opt.step()
    assert 1.0 - q.item() > 0.3


def reference_rmsprop_tf(p0, grads_of, steps, lr, decay, momentum, eps, wd, decoupled):
    """Element-wise TF RMSProp in plain Python floats."""
    p = list(p0)
    ms = [1.0] * len(p)
    mom = [0.0] * len(p)
    for step in range(steps):
        g = grads_of(p, step)
        for i in range(len(p)):
            gi = g[i]
            if decoupled:
                p[i] *= 1.0 - lr * wd
            else:
                gi += wd * p[i]
            ms[i] = decay * ms[i] + (1 - decay) * gi * gi
            mom[i] = momentum * mom[i] + lr * gi / math.sqrt(ms[i] + eps)
            p[i] -= mom[i]
    return p


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_rmsprop_tf_matches_reference_over_several_steps(decoupled, momentum):
    p0 = [0.5, -2.0, 3.0]
    hp = dict(lr=0.05, decay=0.9, momentum=momentum, eps=1e-3, wd=0.1, decoupled=decoupled)

    def grads_of(p, step):  # loss = sum(p^3)/3 + step * sum(p): a gradient that changes with p and step
        return [x * x + step for x in p]

    expected = reference_rmsprop_tf(p0, grads_of, steps=4, **hp)
    p = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    opt = RMSpropTF(
        [p], lr=hp["lr"], decay=0.9, momentum=momentum, eps=1e-3, weight_decay=0.1, decoupled_decay=decoupled
    )
    for step in range(4):
        opt.zero_grad()
        (p.pow(3).sum() / 3 + step * p.sum()).backward()
        opt.step()
    assert p.tolist() == pytest.approx(expected, abs=1e-12)


def test_rmsprop_tf_state_round_trips_through_state_dict():
    p = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = RMSpropTF([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    restored = RMSpropTF([p], lr=0.1)
    restored.load_state_dict(opt.state_dict())
    assert torch.equal(restored.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])
    assert torch.equal(restored.state[p]["square_avg"], opt.state[p]["square_avg"])


def test_rmsprop_tf_rejects_bad_hyperparameters():
    with pytest.raises(PhiscaleError, match="decay=1.0"):
        RMSpropTF([torch.zeros(1, requires_grad=True)], decay=1.0)


# ------------------------------------------------------------------------------------ param groups


def test_param_groups_decay_only_conv_and_linear_weights():
    model = conv_bn_linear()
    model[1].bias.requires_grad_(False)  # frozen parameters are left out altogether
    groups = {g["name"]: g for g in param_groups(model, 1e-5)}
    assert groups["decay"]["param_names"] == ["0.weight", "5.weight"]
    assert groups["decay"]["weight_decay"] == 1e-5
    assert groups["no_decay"]["param_names"] == ["1.weight", "5.bias"]
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert [p.shape for p in groups["no_decay"]["params"]] == [torch.Size([4]), torch.Size([2])]


# ---------------------------------------------------------------------------------- build_optimizer


def test_build_optimizer_scales_lr_linearly_with_the_global_batch():
    model = conv_bn_linear()
    opt = build_optimizer(optim_cfg("rmsprop_tf"), model, global_batch_size=4096)
    assert isinstance(opt, RMSpropTF)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.256, 0.256])  # the paper's 0.256 at 4096
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-5, 0.0]
    assert opt.param_groups[0]["eps"] == 1e-3 and opt.param_groups[0]["decay"] == 0.9

    sgd = build_optimizer(optim_cfg("sgd_cosine"), model, global_batch_size=64)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.025)
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == 0.9
    assert resolved_lr(optim_cfg("sgd_cosine"), 512) == pytest.approx(0.2)


def test_build_optimizer_rejects_bad_config_in_one_line():
    model = conv_bn_linear()
    with pytest.raises(
        PhiscaleError, match="optim.name='adam' is unknown; use one of: rmsprop_tf, sgd_cosine"
    ):
        build_optimizer(optim_cfg("sgd_cosine", name="adam"), model, 256)
    with pytest.raises(PhiscaleError, match="optim.lr_per_256=-0.1"):
        build_optimizer(optim_cfg("sgd_cosine", lr_per_256=-0.1), model, 256)
    with pytest.raises(PhiscaleError, match="global batch size 0"):
        build_optimizer(optim_cfg("sgd_cosine"), model, 0)
    with pytest.raises(PhiscaleError, match="optim.eps='1e-3' is not a number"):
        build_optimizer(optim_cfg("rmsprop_tf", eps="1e-3"), model, 256)  # YAML reads `1e-3` as a string
    with pytest.raises(PhiscaleError, match="optim.decay is missing"):
        build_optimizer(
            {"name": "rmsprop_tf", "lr_per_256": 0.016, "weight_decay": 0.0, "momentum": 0.9}, model, 256
        )


# ------------------------------------------------------------------------------------ LR schedule


def test_rmsprop_schedule_warms_up_linearly_then_decays_in_stairs_every_2_4_epochs():
    cfg = optim_cfg("rmsprop_tf")  # warmup 5 epochs from 0, x0.97 every 2.4 epochs
    spe, epochs = 10, 350
    assert resolved_warmup_steps(cfg, steps_per_epoch=spe, max_epochs=epochs) == 50
    assert lr_multiplier(cfg, 0, spe, epochs) == 0.0
    assert lr_multiplier(cfg, 25, spe, epochs) == pytest.approx(0.5)
    # After warmup the stair count runs from step 0, as TF's exponential_decay on the global step.
    assert lr_multiplier(cfg, 50, spe, epochs) == pytest.approx(0.97**2)  # epoch 5.0 -> floor(5/2.4) = 2
    assert lr_multiplier(cfg, 71, spe, epochs) == pytest.approx(0.97**2)  # epoch 7.1
    assert lr_multiplier(cfg, 72, spe, epochs) == pytest.approx(0.97**3)  # epoch 7.2, exactly 3 stairs
    assert lr_multiplier(cfg, 3499, spe, epochs) == pytest.approx(0.97**145)


def test_sgd_cosine_schedule_starts_at_warmup_ratio_and_ends_at_min_lr():
    cfg = optim_cfg("sgd_cosine", warmup_lr_ratio=0.1, min_lr_ratio=0.01)
    spe, epochs = 10, 100  # warmup 50 steps, cosine over the remaining 950
    assert lr_multiplier(cfg, 0, spe, epochs) == pytest.approx(0.1)
    assert lr_multiplier(cfg, 50, spe, epochs) == pytest.approx(1.0)
    assert lr_multiplier(cfg, 50 + 475, spe, epochs) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_multiplier(cfg, 1000, spe, epochs) == pytest.approx(0.01)
    assert lr_multiplier(cfg, 5000, spe, epochs) == pytest.approx(0.01)


def test_warmup_is_capped_at_a_tenth_of_a_short_run():
    cfg = optim_cfg("sgd_cosine")  # 5 warmup epochs, but the demo only runs 3
    assert resolved_warmup_steps(cfg, steps_per_epoch=20, max_epochs=3) == 6
    assert lr_multiplier(cfg, 6, 20, 3) == pytest.approx(1.0)
    assert (
        resolved_warmup_steps(optim_cfg("sgd_cosine", warmup_epochs=0), steps_per_epoch=20, max_epochs=3) == 0
    )
    assert lr_multiplier(optim_cfg("sgd_cosine", warmup_epochs=0), 0, 20, 3) == pytest.approx(1.0)


def test_lambda_lr_follows_lr_multiplier_and_resumes_from_its_state_dict():
    cfg = optim_cfg("rmsprop_tf")
    model = nn.Linear(2, 1)
    opt = build_optimizer(cfg, model, global_batch_size=256)
    sched = build_lr_schedule(cfg, opt, steps_per_epoch=4, max_epochs=60)  # warmup 20 steps
    seen = []
    for _ in range(30):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.016 * lr_multiplier(cfg, s, 4, 60) for s in range(30)])

    fresh_opt = build_optimizer(cfg, model, global_batch_size=256)
    fresh = build_lr_schedule(cfg, fresh_opt, steps_per_epoch=4, max_epochs=60)
    fresh_opt.load_state_dict(opt.state_dict())
    fresh.load_state_dict(sched.state_dict())
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(0.016 * lr_multiplier(cfg, 30, 4, 60))
    fresh_opt.step()
    fresh.step()
    assert fresh_opt.param_groups[0]["lr"] == pytest.approx(0.016 * lr_multiplier(cfg, 31, 4, 60))


def test_schedule_rejects_bad_values_in_one_line():
    with pytest.raises(PhiscaleError, match="optim.lr_decay_rate=1.5"):
        lr_multiplier(optim_cfg("rmsprop_tf", lr_decay_rate=1.5), 0, 10, 10)
    with pytest.raises(PhiscaleError, match="optim.warmup_lr_ratio=2.0"):
        lr_multiplier(optim_cfg("sgd_cosine", warmup_lr_ratio=2.0), 0, 10, 10)
    with pytest.raises(PhiscaleError, match="steps_per_epoch=0"):
        lr_multiplier(optim_cfg("sgd_cosine"), 0, 0, 10)
