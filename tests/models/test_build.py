"""The zoo reproduces the reference architectures (exact parameter counts, MACs, shapes, details),
and bad scaling input fails early with one PhiscaleError that names the value and the fix."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from phiscale.errors import PhiscaleError
from phiscale.models import MODEL_NAMES, PRESET_NAMES, build_model, resolve_scale
from phiscale.models.layers import InvertedResidual, SqueezeExcite
from phiscale.models.profile import count_macs, count_params

# torchvision's counts (weights metadata `num_params`); mobilenet_v1: the Keras reference's
# trainable parameters (MobileNet v1 is not in torchvision; the paper rounds to 4.2M).
EXACT_PARAMS = {
    "mobilenet_v1": 4_231_976,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "efficientnet_b0": 5_288_548,
    "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232,
    "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704,
    "efficientnet_b7": 66_347_960,
    "efficientnet": 5_288_548,  # φ=0 is B0
}

# Multiply-adds at 224: MobileNet v1 Table 6 (569M), v2 Table 4 (300M), v3 Table 3 (219M, 56M),
# EfficientNet Table 2 (0.39B); v3-L/B0 within 1% of torchvision's published 217M / 386M.
MACS_224 = {
    "mobilenet_v1": 569e6,
    "mobilenet_v2": 300e6,
    "mobilenet_v3_large": 217e6,
    "mobilenet_v3_small": 56e6,
    "efficientnet_b0": 386e6,
}


def meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, **kwargs)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_param_count_equals_reference(name):
    assert count_params(meta_model(name)) == EXACT_PARAMS[name], f"{name} has the wrong parameter count"


@pytest.mark.parametrize("name", sorted(MACS_224))
def test_macs_at_224_within_one_percent(name):
    macs = count_macs(meta_model(name), 224)
    assert macs == pytest.approx(MACS_224[name], rel=0.01), f"{name}: {macs / 1e6:.1f}M MACs"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_every_preset_at_small_resolution(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all(), f"{name} produced non-finite logits"


def test_native_resolutions_follow_the_official_table():
    got = [resolve_scale(n).resolution for n in PRESET_NAMES]
    assert got == [224, 224, 224, 224, 224, 240, 260, 300, 380, 456, 528, 600]


def test_batchnorm_settings_per_family():
    def bn(name):
        return next(m for m in meta_model(name).modules() if isinstance(m, nn.BatchNorm2d))

    assert (bn("mobilenet_v2").eps, bn("mobilenet_v2").momentum) == (1e-5, 0.1)
    assert (bn("mobilenet_v3_large").eps, bn("mobilenet_v3_large").momentum) == (1e-3, 0.01)
    assert (bn("efficientnet_b3").eps, bn("efficientnet_b3").momentum) == (1e-3, 0.01)


def test_squeeze_excite_rules_differ_per_family():
    v3 = [m for m in meta_model("mobilenet_v3_large").modules() if isinstance(m, SqueezeExcite)]
    # first SE block: expanded 72 -> make_divisible(72/4, 8) = 24, ReLU inside, hard-sigmoid gate
    assert (v3[0].reduce.out_channels, type(v3[0].act), type(v3[0].gate)) == (24, nn.ReLU, nn.Hardsigmoid)
    b0 = [m for m in meta_model("efficientnet_b0").modules() if isinstance(m, SqueezeExcite)]
    # block with input 16, expanded 96: squeeze max(1, int(16 * 0.25)) = 4 of the block INPUT
    assert (b0[1].reduce.in_channels, b0[1].reduce.out_channels) == (96, 4)
    assert (type(b0[1].act), type(b0[1].gate)) == (nn.SiLU, nn.Sigmoid)


def test_heads_follow_the_references():
    assert meta_model("mobilenet_v2", width_mult=0.5).classifier[-1].in_features == 1280  # never shrinks
    assert meta_model("mobilenet_v2", width_mult=1.4).classifier[-1].in_features == 1792  # grows
    large = meta_model("mobilenet_v3_large").classifier
    assert [type(m) for m in large] == [nn.Linear, nn.Hardswish, nn.Dropout, nn.Linear]
    assert (large[0].in_features, large[0].out_features) == (960, 1280)
    assert meta_model("mobilenet_v3_small").classifier[0].out_features == 1024
    assert meta_model("efficientnet_b7").classifier[-1].in_features == 2560  # round_filters(1280 * 2.0)
    b4 = meta_model("efficientnet_b4").classifier
    assert isinstance(b4[0], nn.Dropout) and b4[0].p == 0.4  # dropout before the classifier


def test_stochastic_depth_grows_linearly_with_block_index():
    rates = [m.drop_path.p for m in meta_model("efficientnet_b0").modules()
             if isinstance(m, InvertedResidual) and m.use_residual]
    assert rates == sorted(rates) and 0 < rates[0] and rates[-1] < 0.2
    # 16 MBConv blocks; the last residual block is index 14 -> 0.2 * 14 / 16
    assert rates[-1] == pytest.approx(0.2 * 14 / 16)


def test_drop_path_rate_randomises_only_training_forward_passes():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    model = build_model("efficientnet_b0", num_classes=10, dropout=0.0, drop_path_rate=0.5).train()
    assert not torch.equal(model(x), model(x)), "drop path must randomise training forward passes"
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    plain = build_model("efficientnet_b0", num_classes=10, dropout=0.0, drop_path_rate=0.0).train()
    assert torch.equal(plain(x), plain(x))


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b7", "mobilenet_v2"])
def test_a_ten_class_head_starts_near_chance(name):
    """The first loss on 10 classes is about ln 10: EfficientNet's reference head init (±1/sqrt(classes))
    would start near 5 on digits and stall a short run (phiscale.models.build.REFERENCE_HEAD_CLASSES)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, resolution=32)
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    loss = torch.nn.functional.cross_entropy(model(images), labels).item()
    assert abs(loss - math.log(10)) < 0.5, f"{name}: first loss {loss:.2f}, expected about ln 10 = 2.30"


@pytest.mark.parametrize("zero_init", [True, False])
def test_zero_init_residual_starts_every_residual_block_as_the_identity(zero_init):
    """model.zero_init_residual (the digits recipe's): a deep EfficientNet starts as its shortcut path;
    off (the default, as the papers) no block is the identity."""
    model = build_model("efficientnet", num_classes=10, phi=2.0, zero_init_residual=zero_init).eval()
    residual = [m for m in model.modules() if isinstance(m, InvertedResidual) and m.use_residual]
    assert len(residual) > 10 and model.scale.zero_init_residual is zero_init
    for block in residual:
        x = torch.randn(2, block.block[0][0].in_channels, 4, 4)
        assert torch.equal(block(x), x) is zero_init


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(PhiscaleError) as err:
        build_model("resnet50")
    message = str(err.value)
    assert "resnet50" in message and all(name in message for name in MODEL_NAMES)
    assert "\n" not in message


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        ("efficientnet", {"phi": -1.0}, "phi=-1.0"),
        ("efficientnet", {"phi": float("nan")}, "phi=nan"),
        ("efficientnet", {"phi": 1e9}, r"phi=1e\+09 is out of range: phi must be in \[0, 20\]"),
        ("mobilenet_v2", {"width_mult": 0.0}, "width_mult=0.0"),
        ("mobilenet_v1", {"width_mult": -0.5}, "width_mult=-0.5"),
        ("mobilenet_v2", {"resolution": 16}, "total stride 32"),
        ("mobilenet_v1", {"resolution_mult": 0.1}, "total stride 32"),
        ("efficientnet_b0", {"num_classes": 0}, "num_classes=0"),
        ("mobilenet_v3_small", {"phi": 1.0}, "phi applies only"),
        ("efficientnet_b3", {"phi": 3.0}, "phi applies only"),
        ("mobilenet_v2", {"alpha": 1.3}, "apply only to name='efficientnet'"),
        ("efficientnet_b2", {"width_mult": 1.5}, "presets are fixed"),
        ("efficientnet", {"phi": 1.0, "width_mult": -2.0}, "width_mult=-2.0"),
        ("efficientnet", {"phi": 1.0, "beta": 0.0}, "beta=0.0"),
        ("mobilenet_v2", {"dropout": 1.0}, "dropout=1.0"),
        ("mobilenet_v1", {"drop_path_rate": 0.1}, "has none"),
        ("mobilenet_v2", {"resolution": 160, "resolution_mult": 0.5}, "not both"),
        ("mobilenet_v2", {"zero_init_residual": "yes"}, "zero_init_residual='yes' must be true or false"),
    ],
)
def test_bad_scaling_input_raises_one_clear_error(name, kwargs, match):
    with pytest.raises(PhiscaleError, match=match) as err:
        resolve_scale(name, **kwargs)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_efficientnet_scales_phi_from_another_base_network():
    """Figure 4 of the paper scales width from the baselines (d=2, r=1.3): the base's multipliers
    times α^φ, β^φ, γ^φ, named in the run name."""
    scale = resolve_scale("efficientnet", phi=1.0, alpha=1.0, beta=2**0.5, gamma=1.0, depth_mult=2.0,
                          resolution_mult=1.3)
    assert (scale.depth_mult, scale.resolution_mult) == (2.0, 1.3)
    assert scale.width_mult == pytest.approx(2**0.5)
    assert scale.resolution == round(224 * 1.3)
    assert scale.run_name == "efficientnet-phi1-a1-b1.41421-g1-d2-r1.3"
    b0 = resolve_scale("efficientnet", phi=0.0, width_mult=1.0)
    assert b0.run_name == "efficientnet-phi0" and b0 == resolve_scale("efficientnet")
