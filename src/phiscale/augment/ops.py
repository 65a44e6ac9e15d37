"""The image ops of AutoAugment and RandAugment on uint8 batches [N,3,H,W] (any layout, any device),
each with per-sample arguments, written to give PIL's results: ImageOps, ImageEnhance,
Image.transform(AFFINE) and Image.rotate (tests/augment/test_ops_vs_pil.py measures the gap).

Arguments are in each op's natural unit (bits, threshold, enhance factor, degrees, pixels); a
scalar applies to every sample, a tensor of N values (on the images' device) gives one per sample.
The magnitude -> argument scales live in `policies.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Arg = float | torch.Tensor


def _per_sample(value: Arg, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`value` as a [N,1,1,1] column (or a broadcastable scalar) of `dtype` on the images' device."""
    t = torch.as_tensor(value, dtype=dtype, device=images.device)
    return t.reshape(-1, 1, 1, 1) if t.numel() > 1 else t.reshape(1, 1, 1, 1)


def _to_uint8(values: torch.Tensor) -> torch.Tensor:
    """Float results -> uint8 as PIL's C code stores them: clip to 0..255, then truncate."""
    return values.clamp_(0, 255).trunc_().to(torch.uint8)


# -- point ops (PIL ImageOps) ---------------------------------------------------------------------
def identity(images: torch.Tensor) -> torch.Tensor:
    return images


def invert(images: torch.Tensor) -> torch.Tensor:
    return 255 - images


def posterize(images: torch.Tensor, bits: Arg) -> torch.Tensor:
    """Keep the top `bits` (1..8) bits of every channel value (ImageOps.posterize)."""
    keep = 8 - _per_sample(bits, images, torch.int32)
    mask = torch.bitwise_left_shift(torch.full_like(keep, 0xFF), keep).bitwise_and_(0xFF).to(torch.uint8)
    return images & mask


def solarize(images: torch.Tensor, threshold: Arg) -> torch.Tensor:
    """Invert values >= threshold (0..256; 256 changes nothing) (ImageOps.solarize)."""
    threshold = _per_sample(threshold, images, torch.float32)
    # For integer values, v >= t <=> v >= ceil(t): compared as uint8, with t > 255 meaning never.
    lowest = threshold.ceil().clamp(0, 255).to(torch.uint8)
    flip = ((images >= lowest) & (threshold <= 255)).to(torch.uint8).neg_()  # 255 where inverted
    return images ^ flip  # 255 - v == v ^ 255 for uint8 (and much faster than torch.where on CPU)


def solarize_add(images: torch.Tensor, addition: Arg, threshold: int = 128) -> torch.Tensor:
    """Add `addition` (0..255, saturating at 255) to values below `threshold`; the EfficientNet TF
    reference's SolarizeAdd (tensorflow/tpu models/official/efficientnet/autoaugment.py, threshold 128)."""
    add = _per_sample(addition, images, torch.float32).clamp(0, 255).to(torch.uint8)
    gain = (images < threshold).to(torch.uint8).mul_(add)  # the addition where it applies, else 0
    return torch.minimum(images, 255 - gain).add_(gain)  # saturating uint8 add


def _channel_index(images: torch.Tensor) -> torch.Tensor:
    """Each value's slot in a flat [N*3*256] table: (sample, channel, value)."""
    n = images.shape[0]
    base = torch.arange(n * 3, device=images.device, dtype=torch.int64).view(n, 3, 1, 1) * 256
    return images.to(torch.int64) + base


def _apply_luts(images: torch.Tensor, luts: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """Map every channel of every sample through its own 256-entry table (`luts` [N,3,256])."""
    index = _channel_index(images) if index is None else index
    return luts.to(torch.uint8).reshape(-1)[index]


def autocontrast(images: torch.Tensor) -> torch.Tensor:
    """Stretch each channel's [min, max] to [0, 255] (ImageOps.autocontrast, cutoff=0).

    PIL builds the table in double precision as int(i * scale + offset), scale = 255 / (hi - lo),
    offset = -lo * scale; that rounds differently from exact integer arithmetic for ~0.4% of
    (lo, hi, i), so the same double expression is used here."""
    lo = images.amin(dim=(2, 3)).to(torch.float64)  # [N,3]
    hi = images.amax(dim=(2, 3)).to(torch.float64)
    flat = hi <= lo  # one value only: PIL leaves the channel unchanged
    # A true division (torch computes `255.0 / t` as 255 * (1 / t), which rounds differently).
    scale = torch.full_like(lo, 255.0).div_(torch.where(flat, 1.0, hi - lo))
    offset = -lo * scale
    levels = torch.arange(256, dtype=torch.float64, device=images.device)
    luts = (levels * scale[..., None] + offset[..., None]).trunc_().clamp_(0, 255)
    luts = torch.where(flat[..., None], levels, luts)
    return _apply_luts(images, luts)


def equalize(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel, PIL's algorithm (ImageOps.equalize): with h the
    channel's histogram, step = (sum(h) - h[last nonzero bin]) // 255, and
    lut[i] = (step // 2 + sum(h[:i])) // step; a channel with one value or step 0 is unchanged."""
    index = _channel_index(images)
    n = images.shape[0]
    flat = index.reshape(-1)
    # scatter_add_ on a 1-D tensor is deterministic on CUDA, and unlike bincount needs no host sync.
    hist = torch.zeros(n * 3 * 256, dtype=torch.int64, device=images.device)
    hist.scatter_add_(0, flat, torch.ones(1, dtype=torch.int64, device=images.device).expand_as(flat))
    hist = hist.view(n, 3, 256)
    levels = torch.arange(256, device=images.device)
    nonzero = hist > 0
    last_bin = torch.where(nonzero, levels, -1).amax(dim=2, keepdim=True)
    last_count = hist.gather(2, last_bin.clamp(min=0)).squeeze(2)
    step = (hist.sum(dim=2) - last_count) // 255
    below = hist.cumsum(dim=2) - hist  # pixels in bins < i
    luts = ((step // 2)[..., None] + below) // step.clamp(min=1)[..., None]
    unchanged = (nonzero.sum(dim=2) <= 1) | (step == 0)
    luts = torch.where(unchanged[..., None], levels, luts.clamp_(0, 255))
    return _apply_luts(images, luts, index)


# -- colour ops (PIL ImageEnhance: blend the image with a "degenerate" version) -------------------
def _blend(degenerate: torch.Tensor, images: torch.Tensor, factor: Arg) -> torch.Tensor:
    """Image.blend(degenerate, image, factor) as libImaging/Blend.c computes it: in float32,
    d + factor * (x - d), clipped to 0..255, then truncated (factor > 1 extrapolates)."""
    d = degenerate.to(torch.float32)
    out = images.to(torch.float32).sub_(d).mul_(_per_sample(factor, images, torch.float32)).add_(d)
    return _to_uint8(out)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """PIL's convert("L"): ITU-R 601-2 luma (299, 587, 114)/1000 in 16.16 fixed point, rounded
    (libImaging/Convert.c L24: r*19595 + g*38470 + b*7471 + 0x8000, >> 16). Returns int32 [N,1,H,W]."""
    x = images.to(torch.int32)
    return (x[:, 0:1] * 19595 + x[:, 1:2] * 38470 + x[:, 2:3] * 7471 + 0x8000) >> 16


def color(images: torch.Tensor, factor: Arg) -> torch.Tensor:
    """Saturation: 0 gives the grey image, 1 the original (ImageEnhance.Color)."""
    return _blend(grayscale(images), images, factor)


def contrast(images: torch.Tensor, factor: Arg) -> torch.Tensor:
    """Blend with the image's mean grey level, int(mean(L) + 0.5) (ImageEnhance.Contrast)."""
    gray = grayscale(images)
    mean = gray.sum(dim=(1, 2, 3), dtype=torch.int64).to(torch.float64) / gray[0].numel()
    return _blend(torch.floor(mean + 0.5).view(-1, 1, 1, 1), images, factor)


def brightness(images: torch.Tensor, factor: Arg) -> torch.Tensor:
    """Blend with black (ImageEnhance.Brightness)."""
    return _blend(torch.zeros((), device=images.device), images, factor)


# ImageFilter.SMOOTH: the 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13.
_SMOOTH = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]])


def smooth(images: torch.Tensor) -> torch.Tensor:
    """image.filter(ImageFilter.SMOOTH): interior pixels get round(sum / 13) (Filter.c adds 0.5 and
    truncates), the one-pixel border is copied. A sum of integers / 13 is never within 1/26 of a
    rounding edge, so float32 gives PIL's integers exactly."""
    if images.shape[2] < 3 or images.shape[3] < 3:
        return images
    weight = _SMOOTH.to(images.device, non_blocking=True).expand(3, 1, 3, 3)  # no wait on the device
    # Depthwise convolution is several times faster on channels_last input on the CPU.
    sums = F.conv2d(images.to(torch.float32, memory_format=torch.channels_last), weight, groups=3)
    out = images.clone()
    out[:, :, 1:-1, 1:-1] = sums.div_(13.0).add_(0.5).floor_().to(torch.uint8)
    return out


def sharpness(images: torch.Tensor, factor: Arg) -> torch.Tensor:
    """Blend with the SMOOTH-filtered image: 0 blurs, 1 is the original, 2 sharpens (ImageEnhance.Sharpness)."""
    return _blend(smooth(images), images, factor)


# -- geometric ops: one batched affine warp ------------------------------------------------------
# A matrix [N,2,3] maps an output pixel position to the input position it samples, in PIL's
# convention (Image.transform AFFINE data (a, b, c, d, e, f)): pixel (x, y) covers [x, x+1) and is
# sampled at its centre (x + 0.5, y + 0.5), libImaging/Geometry.c.
def _affine_rows(a, b, c, d, e, f) -> torch.Tensor:
    return torch.stack([torch.stack([a, b, c], dim=-1), torch.stack([d, e, f], dim=-1)], dim=-2)


def _column64(value: Arg) -> torch.Tensor:
    return torch.as_tensor(value, dtype=torch.float64).reshape(-1)


def shear_x_matrix(shear: Arg, height: int, width: int) -> torch.Tensor:
    """x_in = x + shear * y (the AutoAugment code's ShearX, transform data (1, s, 0, 0, 1, 0))."""
    s = _column64(shear)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return _affine_rows(one, s, zero, zero, one, zero)


def shear_y_matrix(shear: Arg, height: int, width: int) -> torch.Tensor:
    """y_in = shear * x + y (transform data (1, 0, 0, s, 1, 0))."""
    s = _column64(shear)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    return _affine_rows(one, zero, zero, s, one, zero)


def translate_x_matrix(pixels: Arg, height: int, width: int) -> torch.Tensor:
    """x_in = x + pixels: the content moves left by `pixels` (transform data (1, 0, t, 0, 1, 0))."""
    t = _column64(pixels)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return _affine_rows(one, zero, t, zero, one, zero)


def translate_y_matrix(pixels: Arg, height: int, width: int) -> torch.Tensor:
    """y_in = y + pixels (transform data (1, 0, 0, 0, 1, t))."""
    t = _column64(pixels)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    return _affine_rows(one, zero, zero, zero, one, t)


def rotate_matrix(degrees: Arg, height: int, width: int) -> torch.Tensor:
    """Counter-clockwise rotation about the image centre, as Image.rotate(degrees) builds it
    (cos/sin rounded to 15 decimals, centre (W/2, H/2), the image keeps its size)."""
    angle = -_column64(degrees) * (math.pi / 180.0)
    cos, sin = torch.round(torch.cos(angle), decimals=15), torch.round(torch.sin(angle), decimals=15)
    cx, cy = width / 2.0, height / 2.0
    return _affine_rows(cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy)


INTERPOLATIONS = ("nearest", "bilinear")


def warp_affine(images: torch.Tensor, matrices: torch.Tensor, *, interpolation: str = "nearest",
                fill: float = 128.0) -> torch.Tensor:
    """Resample every image through its own PIL-convention matrix ([N,2,3]) with one
    affine_grid/grid_sample; positions outside the input take `fill`.

    Nearest picks the pixel containing the sampled position, as PIL does; PIL computes positions in
    16.16 fixed point and grid_sample in float32, so a position within ~1e-4 px of a pixel edge can
    land on the neighbour (a fraction of a percent of pixels, measured in the tests)."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation={interpolation!r} is not one of {INTERPOLATIONS}")
    n, _, height, width = images.shape
    matrices = matrices.expand(n, 2, 3)
    # PIL pixel coordinates <-> grid_sample's normalised ones (align_corners=False: -1 and 1 are
    # the outer edges of the border pixels): u_norm = 2 u / W - 1.
    to_norm = torch.tensor([[2.0 / width, 0.0, -1.0], [0.0, 2.0 / height, -1.0], [0.0, 0.0, 1.0]],
                           dtype=torch.float64)
    from_norm = torch.linalg.inv(to_norm)
    bottom = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(len(matrices), 1, 3)
    pixel = torch.cat([matrices.to(torch.float64).cpu(), bottom], dim=1)
    theta = (to_norm @ pixel @ from_norm)[:, :2].to(torch.float32)
    theta = theta.to(images.device, non_blocking=True)
    grid = F.affine_grid(theta, [n, 3, height, width], align_corners=False)
    # Zero padding of (x - fill), plus fill: outside positions read `fill`, and bilinear blends
    # the fill into border pixels the way it blends neighbours.
    shifted = images.to(torch.float32).sub_(fill)
    out = F.grid_sample(shifted, grid, mode=interpolation, padding_mode="zeros", align_corners=False).add_(fill)
    if interpolation == "bilinear":
        out = out.round_()
    return out.clamp_(0, 255).to(torch.uint8)
