"""Every op against PIL on the same images and arguments (PIL is what the AutoAugment and
RandAugment papers' code ran). Point and colour ops reproduce PIL's integer results exactly; the
geometric ops with nearest resampling match to a stated fraction of pixels; bilinear to one level
in the interior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

from phiscale.augment import ops

FILL = 128


def pil_batch(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)


def solarize_add_pil(image: Image.Image, addition: int) -> Image.Image:
    """The EfficientNet TF reference's SolarizeAdd as a PIL lookup table (threshold 128)."""
    return image.point([min(255, i + addition) if i < 128 else i for i in range(256)] * 3)


# (name, ours, PIL): both exact. The point and colour ops follow PIL's own arithmetic: ImageOps'
# tables (autocontrast in double precision, equalize's step rule), Blend.c's float32 blend with
# truncation, Convert.c's fixed-point luma, Filter.c's rounded SMOOTH kernel.
EXACT = [
    ("invert", ops.invert, ImageOps.invert),
    ("autocontrast", ops.autocontrast, ImageOps.autocontrast),
    ("equalize", ops.equalize, ImageOps.equalize),
    *[(f"posterize {b} bits", lambda x, b=b: ops.posterize(x, b), lambda im, b=b: ImageOps.posterize(im, b))
      for b in (1, 4, 5, 7, 8)],
    *[(f"solarize {t}", lambda x, t=t: ops.solarize(x, t), lambda im, t=t: ImageOps.solarize(im, t))
      for t in (0, 26, 128, 179.2, 256)],
    *[(f"solarize_add {a}", lambda x, a=a: ops.solarize_add(x, a), lambda im, a=a: solarize_add_pil(im, a))
      for a in (0, 33, 110)],
    *[(f"{name} {f}", lambda x, op=op, f=f: op(x, f), lambda im, enh=enh, f=f: enh(im).enhance(f))
      for name, op, enh in [("color", ops.color, ImageEnhance.Color),
                            ("contrast", ops.contrast, ImageEnhance.Contrast),
                            ("brightness", ops.brightness, ImageEnhance.Brightness),
                            ("sharpness", ops.sharpness, ImageEnhance.Sharpness)]
      for f in (0.1, 0.46, 1.0, 1.36, 1.9)],
]


@pytest.mark.parametrize("name, ours, pil", EXACT, ids=[case[0] for case in EXACT])
def test_point_and_colour_ops_equal_pil(name, ours, pil, batch, pil_images):
    out = ours(batch)
    expected = pil_batch([pil(im) for im in pil_images])
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    diff = (out.int() - expected.int()).abs()
    assert diff.max() == 0, f"{name}: {int((diff > 0).sum())} values differ from PIL, by up to {int(diff.max())}"


def test_per_sample_arguments_equal_one_call_per_sample(batch, pil_images):
    """A tensor of arguments gives each sample its own (here: sample i gets factor 0.1 + 0.3 i)."""
    factors = torch.tensor([0.1 + 0.3 * i for i in range(len(batch))])
    out = ops.contrast(batch, factors)
    expected = pil_batch([ImageEnhance.Contrast(im).enhance(float(f)) for im, f in zip(pil_images, factors, strict=True)])
    assert torch.equal(out, expected)


def pil_affine(data):
    return lambda im: im.transform(im.size, Image.AFFINE, data, resample=Image.NEAREST, fillcolor=(FILL,) * 3)


# (name, matrix builder, argument, PIL call). Translations include fractional pixels.
GEOMETRIC = [
    *[(f"rotate {d}", ops.rotate_matrix, d, lambda im, d=d: im.rotate(d, fillcolor=(FILL,) * 3))
      for d in (-30.0, -12.5, 7.0, 27.0)],
    *[(f"shear_x {s}", ops.shear_x_matrix, s, pil_affine((1, s, 0, 0, 1, 0))) for s in (-0.3, 0.1, 0.27)],
    *[(f"shear_y {s}", ops.shear_y_matrix, s, pil_affine((1, 0, 0, s, 1, 0))) for s in (-0.3, 0.1, 0.27)],
    *[(f"translate_x {t}", ops.translate_x_matrix, t, pil_affine((1, 0, t, 0, 1, 0))) for t in (-21.75, 3.3, 16)],
    *[(f"translate_y {t}", ops.translate_y_matrix, t, pil_affine((1, 0, 0, 0, 1, t))) for t in (-18.1, 3.3, 9)],
]

# PIL's nearest affine steps through output positions in 16.16 fixed point (Geometry.c
# affine_fixed), grid_sample computes them in float32 from normalised coordinates: where a sampled
# position lies within ~1e-4 px of a pixel edge the two may pick neighbouring pixels. On these
# images no pixel differs today; the bound leaves room for such edge cases, and is far below what a
# wrong convention (a half-pixel shift, a swapped axis or sign: tens of percent) would give.
MAX_DIFFERING_FRACTION = 0.005


@pytest.mark.parametrize("name, matrix, arg, pil", GEOMETRIC, ids=[case[0] for case in GEOMETRIC])
def test_geometric_ops_nearest_match_pil(name, matrix, arg, pil, batch, pil_images):
    height, width = batch.shape[2:]
    out = ops.warp_affine(batch, matrix(arg, height, width), interpolation="nearest", fill=FILL)
    expected = pil_batch([pil(im) for im in pil_images])
    assert out.dtype == torch.uint8
    differing = (out != expected).any(dim=1).float().mean().item()
    assert differing <= MAX_DIFFERING_FRACTION, f"{name}: {differing:.2%} of pixels differ from PIL"


@pytest.mark.parametrize("degrees", [-25.0, 4.0, 30.0])
def test_bilinear_rotation_matches_pil_in_the_interior(degrees, batch, pil_images):
    """PIL's bilinear truncates and, near the input's border, clamps to the edge pixel where this
    blends in the fill; so compare pixels whose whole neighbourhood comes from inside the image
    (2 px away from any filled pixel): there the only difference is rounding vs truncation."""
    height, width = batch.shape[2:]
    matrix = ops.rotate_matrix(degrees, height, width)
    out = ops.warp_affine(batch, matrix, interpolation="bilinear", fill=FILL)
    expected = pil_batch([im.rotate(degrees, resample=Image.BILINEAR, fillcolor=(FILL,) * 3) for im in pil_images])
    covered = ops.warp_affine(torch.full((1, 3, height, width), 255, dtype=torch.uint8), matrix, fill=0)
    covered = covered[:, :1].float() / 255
    interior = (-F.max_pool2d(-F.pad(covered, (2, 2, 2, 2)), 5, stride=1) > 0.5)[0, 0]
    assert interior.float().mean() > 0.5
    diff = (out.int() - expected.int()).abs()[:, :, interior]
    assert diff.max() <= 1, f"rotate {degrees} bilinear: interior differs from PIL by up to {int(diff.max())}"
    assert diff.float().mean() <= 0.6


def test_ops_keep_uint8_and_layout_agnostic_values(batch):
    """channels_last input gives the same values as contiguous input, as uint8 in 0..255."""
    last = batch.contiguous(memory_format=torch.channels_last)
    height, width = batch.shape[2:]
    calls = [
        ops.autocontrast, ops.equalize, ops.invert, lambda x: ops.posterize(x, 3),
        lambda x: ops.solarize(x, 100), lambda x: ops.solarize_add(x, 60), lambda x: ops.color(x, 1.7),
        lambda x: ops.contrast(x, 0.3), lambda x: ops.brightness(x, 1.8), lambda x: ops.sharpness(x, 1.9),
        lambda x: ops.warp_affine(x, ops.rotate_matrix(20.0, height, width)),
        lambda x: ops.warp_affine(x, ops.shear_x_matrix(0.2, height, width), interpolation="bilinear"),
    ]
    for call in calls:
        a, b = call(batch), call(last)
        assert a.dtype == b.dtype == torch.uint8
        assert torch.equal(a, b)


def test_sharpness_leaves_the_one_pixel_border(batch):
    """ImageFilter.SMOOTH copies the one-pixel border: sharpness never changes border pixels."""
    out = ops.sharpness(batch, 1.9)
    assert torch.equal(out[:, :, 0], batch[:, :, 0]) and torch.equal(out[:, :, :, -1], batch[:, :, :, -1])
    assert not torch.equal(out, batch)
