"""The policies: AutoAugment's ImageNet table, RandAugment's draws, the magnitude -> argument
scales, and apply_layer (one call per op over the samples that drew it)."""

from __future__ import annotations

import pytest
import torch

from phiscale.augment import ops
from phiscale.augment.policies import (
    AUTOAUGMENT_IMAGENET,
    IDENTITY,
    OP_NAMES,
    OPS,
    RANDAUGMENT_OPS,
    Layer,
    apply_layer,
    autoaugment_plan,
    op_arguments,
    randaugment_plan,
)

# The ops of the ImageNet policy as printed in arXiv 1805.09501's appendix.
IMAGENET_POLICY_OPS = {"posterize", "rotate", "solarize", "autocontrast", "equalize", "color", "invert",
                       "contrast", "sharpness", "shear_x"}


def test_autoaugment_imagenet_table_is_the_papers_shape():
    assert len(AUTOAUGMENT_IMAGENET) == 25
    for row in AUTOAUGMENT_IMAGENET:
        assert len(row) == 2
        for name, prob, bin_ in row:
            assert name in OPS and 0.0 <= prob <= 1.0
            assert (bin_ is None) == (OPS[name].argument is None)
            assert bin_ is None or 0 <= bin_ <= 9
    assert {name for row in AUTOAUGMENT_IMAGENET for name, _, _ in row} == IMAGENET_POLICY_OPS


def test_autoaugment_plan_applies_each_op_with_its_probability():
    """Over many samples each op's share in each layer matches the table (sub-policy uniform)."""
    n = 40_000
    layers = autoaugment_plan(n, torch.Generator().manual_seed(0))
    assert len(layers) == 2
    for j, layer in enumerate(layers):
        for name in IMAGENET_POLICY_OPS:
            expected = sum(p for row in AUTOAUGMENT_IMAGENET for k, (op, p, _) in enumerate(row)
                           if k == j and op == name) / 25
            seen = (layer.op == OP_NAMES.index(name)).double().mean().item()
            assert seen == pytest.approx(expected, abs=0.01), f"layer {j} {name}: {seen:.3f} vs {expected:.3f}"


def test_randaugment_plan_draws_uniformly_at_magnitude_m():
    n = 28_000
    layers = randaugment_plan(n, torch.Generator().manual_seed(1), num_ops=3, magnitude=9)
    assert len(layers) == 3
    for layer in layers:
        counts = torch.bincount(layer.op, minlength=len(OP_NAMES))
        drawn = {OP_NAMES[k] for k in counts.nonzero().squeeze(1).tolist()}
        assert drawn == set(RANDAUGMENT_OPS)
        shares = counts[counts > 0].double() / n
        assert torch.allclose(shares, torch.full_like(shares, 1 / 14), atol=0.008)
        assert torch.all(layer.level == 9.0)
        assert set(layer.sign.tolist()) == {-1.0, 1.0}


def test_randaugment_magnitude_noise_is_gaussian_and_clipped():
    g = torch.Generator().manual_seed(2)
    (layer,) = randaugment_plan(20_000, g, num_ops=1, magnitude=5, magnitude_std=1.0)
    assert layer.level.mean().item() == pytest.approx(5.0, abs=0.05)
    assert layer.level.std().item() == pytest.approx(1.0, abs=0.05)
    (layer,) = randaugment_plan(20_000, g, num_ops=1, magnitude=10, magnitude_std=2.0)
    assert layer.level.max() == 10.0 and layer.level.min() >= 0.0
    assert (layer.level == 10.0).double().mean().item() == pytest.approx(0.5, abs=0.02)


def test_randaugment_with_no_ops_draws_nothing():
    assert randaugment_plan(8, torch.Generator(), num_ops=0, magnitude=9) == []


# Arguments at magnitude 0, 5 and 10 (ranges: arXiv 1805.09501 appendix; directions: the
# AutoAugment code, where posterize and solarize get stronger with the magnitude).
SCALES = {
    "rotate": (0.0, 15.0, 30.0),
    "shear_x": (0.0, 0.15, 0.3),
    "shear_y": (0.0, 0.15, 0.3),
    "translate_x": (0.0, 75 / 331, 150 / 331),
    "translate_y": (0.0, 75 / 331, 150 / 331),
    "posterize": (8.0, 6.0, 4.0),
    "solarize": (256.0, 128.0, 0.0),
    "solarize_add": (0.0, 55.0, 110.0),
    "color": (0.1, 1.0, 1.9),
    "contrast": (0.1, 1.0, 1.9),
    "brightness": (0.1, 1.0, 1.9),
    "sharpness": (0.1, 1.0, 1.9),
}


@pytest.mark.parametrize("name", sorted(SCALES))
def test_magnitude_scales(name):
    levels = torch.tensor([0.0, 5.0, 10.0], dtype=torch.float64)
    args = op_arguments(name, levels, torch.ones(3, dtype=torch.float64))
    assert args.tolist() == pytest.approx(SCALES[name])
    negated = op_arguments(name, levels, -torch.ones(3, dtype=torch.float64))
    sign = -1 if OPS[name].signed else 1
    assert negated.tolist() == pytest.approx([sign * a for a in SCALES[name]])


def test_ops_without_a_magnitude_take_no_argument():
    for name in ("identity", "autocontrast", "equalize", "invert"):
        assert op_arguments(name, torch.ones(1), torch.ones(1)) is None


def _reference(image: torch.Tensor, name: str, level: float, sign: float) -> torch.Tensor:
    """One sample through one op, called directly."""
    x = image[None]
    arg = op_arguments(name, torch.tensor([level], dtype=torch.float64), torch.tensor([sign], dtype=torch.float64))
    spec = OPS[name]
    if spec.matrix is not None:
        height, width = x.shape[2:]
        pixels = arg * {"translate_x": width, "translate_y": height}.get(name, 1)
        return ops.warp_affine(x, spec.matrix(pixels, height, width), fill=128)[0]
    if spec.pixel is None:
        return image
    return (spec.pixel(x) if arg is None else spec.pixel(x, arg.float()))[0]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_apply_layer_equals_each_sample_through_its_own_op(layout, batch):
    """A layer where every op appears: grouping by op (and the shared warp) gives what each sample
    would get alone, in either memory layout, as uint8."""
    n = len(OP_NAMES)
    images = batch[torch.arange(n) % len(batch)].contiguous(memory_format=layout)
    levels = torch.linspace(1.0, 10.0, n, dtype=torch.float64)
    signs = torch.tensor([(-1.0) ** i for i in range(n)], dtype=torch.float64)
    layer = Layer(torch.arange(n), levels, signs)
    out = apply_layer(images.clone(), layer, fill=128)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    for i, name in enumerate(OP_NAMES):
        expected = _reference(images[i], name, float(levels[i]), float(signs[i]))
        assert torch.equal(out[i], expected), f"sample {i} ({name}) differs from the op applied alone"
    assert torch.equal(out[IDENTITY], images[IDENTITY])
