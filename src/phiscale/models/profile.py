"""Parameters, multiply-adds and activation memory of a model, beside the published figures.

Definitions (what every number in phiscale means):
- params: trainable parameters (BatchNorm's affine weights included, running stats not).
- macs: multiply-accumulates of one image, counted by `torch.utils.flop_counter.FlopCounterMode`
  (convolutions and matrix products; it reports 2 FLOPs per MAC). This is what the MobileNet and
  EfficientNet papers call "FLOPs" / "Mult-Adds". BN, activations, pooling and SE's elementwise
  product are not counted, as in the papers.
- flops: 2 × macs.
- activation_bytes: bytes of every tensor that the forward pass of ONE image (eval mode, float32)
  creates: the primary (first) result of each aten op, with views and in-place results skipped
  (they reuse memory) and nothing subtracted when freed. Autograd keeps nearly all of these intermediates
  (conv, BN and activation outputs) for the backward pass, so this is, to first order, the
  training-time activation memory per image: a batch of N needs about N × activation_bytes.

All three run a real forward pass; on a model built under `torch.device("meta")` the pass
tracks shapes only, which gives the same numbers in milliseconds and allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from phiscale.models.scaling import BASE_RESOLUTION


@dataclass(frozen=True)
class ModelProfile:
    """One model at one resolution, per image (batch 1)."""

    params: int
    macs: int
    flops: int
    activation_bytes: int


class _FreshTensorBytes(TorchDispatchMode):
    """Sum the bytes of every tensor an aten op returns that is not an alias of its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Only the op's primary result: extra outputs are bookkeeping whose size depends on the
        # backend (eval-mode BatchNorm returns empty statistics on CPU, C-sized ones on meta).
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if func._schema.returns and func._schema.returns[0].alias_info is None:  # views/in-place: no new memory
            for tensor in first if isinstance(first, (tuple, list)) else (first,):
                if isinstance(tensor, torch.Tensor):
                    self.total += tensor.numel() * tensor.element_size()
        return out


def _input_for(model: nn.Module, resolution: int, in_channels: int) -> torch.Tensor:
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(1, in_channels, resolution, resolution, device=device, dtype=dtype)


def _measure(model: nn.Module, resolution: int, in_channels: int, memory: bool) -> tuple[int, int]:
    """(MACs, activation bytes) of one eval-mode forward pass at batch 1; the training flag is restored."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        from phiscale.errors import PhiscaleError

        raise PhiscaleError(f"resolution={resolution!r} must be a positive integer number of pixels (e.g. 224)")
    x = _input_for(model, resolution, in_channels)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as flops:
            if memory:
                with _FreshTensorBytes() as fresh:
                    model(x)
                activation = fresh.total
            else:
                model(x)
                activation = 0
    finally:
        model.train(was_training)
    return flops.get_total_flops() // 2, activation


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, resolution: int, *, in_channels: int = 3) -> int:
    """Multiply-accumulates of one image of `in_channels` x resolution x resolution (see module doc)."""
    return _measure(model, resolution, in_channels, memory=False)[0]


def profile_model(model: nn.Module, resolution: int | None = None, *, in_channels: int = 3) -> ModelProfile:
    """Params, MACs, FLOPs and activation bytes of one image; resolution defaults to `model.scale.resolution`."""
    if resolution is None:
        resolution = model.scale.resolution  # type: ignore[union-attr]
    macs, activation = _measure(model, resolution, in_channels, memory=True)
    return ModelProfile(params=count_params(model), macs=macs, flops=2 * macs, activation_bytes=activation)


@dataclass(frozen=True)
class Published:
    """A published size, with where it was printed."""

    params: int
    macs: int
    source: str


_V1 = "Howard et al. 2017, MobileNets, arXiv:1704.04861"
_V2 = "Sandler et al. 2018, MobileNetV2, arXiv:1801.04381, Table 4 (300M MAdds)"
_V3 = "Howard et al. 2019, Searching for MobileNetV3, arXiv:1905.02244, Table 3"
_EN = "Tan & Le 2019, EfficientNet, arXiv:1905.11946, Table 2"
_TV = "exact parameter count of torchvision's reference (weights metadata `num_params`)"

# (model name, width multiplier, resolution) -> published figures. Parameter counts are the exact
# torchvision counts where torchvision has the model (the papers round to 0.1M: 3.4M, 5.4M, 2.5M,
# 5.3M, 7.8M, 9.2M, 12M, 19M, 30M, 43M, 66M); multiply-adds are the papers' own figures.
PUBLISHED: dict[tuple[str, float, int], Published] = {
    # MobileNet v1: Table 6 (width multiplier, at 224) and Table 7 (resolution, at width 1.0).
    ("mobilenet_v1", 1.0, 224): Published(4_200_000, 569_000_000, _V1 + ", Table 6"),
    ("mobilenet_v1", 0.75, 224): Published(2_600_000, 325_000_000, _V1 + ", Table 6"),
    ("mobilenet_v1", 0.5, 224): Published(1_300_000, 149_000_000, _V1 + ", Table 6"),
    ("mobilenet_v1", 0.25, 224): Published(500_000, 41_000_000, _V1 + ", Table 6"),
    ("mobilenet_v1", 1.0, 192): Published(4_200_000, 418_000_000, _V1 + ", Table 7"),
    ("mobilenet_v1", 1.0, 160): Published(4_200_000, 290_000_000, _V1 + ", Table 7"),
    ("mobilenet_v1", 1.0, 128): Published(4_200_000, 186_000_000, _V1 + ", Table 7"),
    ("mobilenet_v2", 1.0, 224): Published(3_504_872, 300_000_000, f"{_V2}; params: {_TV}"),
    ("mobilenet_v3_large", 1.0, 224): Published(5_483_032, 219_000_000, f"{_V3}; params: {_TV}"),
    ("mobilenet_v3_small", 1.0, 224): Published(2_542_856, 56_000_000, f"{_V3}; params: {_TV}"),
    ("efficientnet_b0", 1.0, 224): Published(5_288_548, 390_000_000, f"{_EN}; params: {_TV}"),
    ("efficientnet_b1", 1.0, 240): Published(7_794_184, 700_000_000, f"{_EN}; params: {_TV}"),
    ("efficientnet_b2", 1.1, 260): Published(9_109_994, 1_000_000_000, f"{_EN}; params: {_TV}"),
    ("efficientnet_b3", 1.2, 300): Published(12_233_232, 1_800_000_000, f"{_EN}; params: {_TV}"),
    ("efficientnet_b4", 1.4, 380): Published(19_341_616, 4_200_000_000, f"{_EN}; params: {_TV}"),
    ("efficientnet_b5", 1.6, 456): Published(30_389_784, 9_900_000_000, f"{_EN}; params: {_TV}"),
    ("efficientnet_b6", 1.8, 528): Published(43_040_704, 19_000_000_000, f"{_EN}; params: {_TV}"),
    ("efficientnet_b7", 2.0, 600): Published(66_347_960, 37_000_000_000, f"{_EN}; params: {_TV}"),
}


def published_for(name: str, *, width_mult: float = 1.0, depth_mult: float = 1.0, resolution: int = BASE_RESOLUTION,
                  phi: float | None = None, num_classes: int = 1000) -> Published | None:
    """The published figures for this exact configuration, or None when none were published.

    The `efficientnet` formula at φ=0 is B0 and is matched to B0's row.
    """
    if num_classes != 1000:
        return None
    if name == "efficientnet":
        if phi not in (None, 0, 0.0):
            return None
        name = "efficientnet_b0"
    elif not name.startswith("efficientnet_b") and depth_mult != 1.0:
        return None
    return PUBLISHED.get((name, float(width_mult), int(resolution)))
