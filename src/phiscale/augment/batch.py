"""`BatchAugment`: the one entry point. Training batches, as the loader hands them over (uint8
[N,3,H,W] on the device, before normalisation), get a policy (AutoAugment / RandAugment), random
erasing, then mixup or CutMix, in that order; labels become soft targets when mixing is on.

Randomness comes from the instance's own generators, never the global RNG: the per-sample choices
(ops, magnitudes, boxes, mixing weights) from a CPU torch.Generator, the random pixel values of
erasing from a torch.Generator on the images' device. Both are seeded from `seed + rank` and saved
by `state_dict()`, so a resumed run continues the same streams.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from phiscale.augment import erasing as erasing_ops
from phiscale.augment.mix import apply_mix, sample_mix, smooth_one_hot
from phiscale.augment.ops import INTERPOLATIONS
from phiscale.augment.policies import MAX_LEVEL, Layer, apply_layer, autoaugment_plan, randaugment_plan
from phiscale.errors import PhiscaleError

POLICIES = ("none", "autoaugment", "randaugment")
_PIXEL_STREAM = 0x9E3779B9  # the pixel generator's seed is offset from the plan's: two distinct streams


def _number(key: str, value: Any, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise PhiscaleError(f"{key}={value!r} must be a number, e.g. {key}={example}")
    return float(value)


def _probability(key: str, value: Any, example: str) -> float:
    p = _number(key, value, example)
    if not 0.0 <= p <= 1.0:
        raise PhiscaleError(f"{key}={value!r} must be a probability in [0, 1], e.g. {key}={example}")
    return p


def _alpha(key: str, value: Any, what: str) -> float:
    a = _number(key, value, "0.2")
    if a < 0 or math.isinf(a):
        raise PhiscaleError(f"{key}={value!r} must be >= 0: the Beta(alpha, alpha) parameter of {what} "
                            f"(0 turns it off; 0.2-1.0 is usual, e.g. {key}=0.2)")
    return a


def _integer(key: str, value: Any, minimum: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise PhiscaleError(f"{key}={value!r} must be an integer >= {minimum}, e.g. {key}={example}")
    return int(value)


class BatchAugment:
    """Augment a training batch on its device: `images, targets = augment(images_uint8, labels_int64)`.

    policy: "none" | "autoaugment" (the ImageNet policy of arXiv 1805.09501) | "randaugment"
        (num_ops ops per sample at `magnitude` on the 0..10 scale, arXiv 1909.13719), with optional
        Gaussian magnitude noise `magnitude_std` (clipped to 0..10).
    mixup, cutmix: Beta(alpha, alpha) parameters (0 = off); mix_prob: probability a batch is mixed;
        switch_prob: probability of CutMix when both are on.
    erasing: per-sample probability of random erasing (arXiv 1708.04896).
    interpolation, fill: how geometric ops resample ("nearest" as in the AutoAugment code, or
        "bilinear") and the value of pixels moved in from outside (128, the EfficientNet TF reference's).

    Targets are the int64 labels unchanged when neither mixup nor cutmix is on (the plain
    cross-entropy path, with its own label smoothing), else float32 soft targets [N, num_classes]
    with label smoothing folded in: read them with `soft_target_cross_entropy`.
    """

    def __init__(
        self,
        policy: str = "none",
        *,
        num_ops: int = 2,
        magnitude: float = 9,
        magnitude_std: float = 0.0,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        erasing: float = 0.0,
        num_classes: int,
        label_smoothing: float = 0.0,
        interpolation: str = "nearest",
        fill: float = 128,
        seed: int = 0,
        rank: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise PhiscaleError(f"aug.policy={policy!r} is not one of {', '.join(POLICIES)}: "
                                "e.g. aug.policy=randaugment")
        self.policy = policy
        self.num_ops = _integer("aug.num_ops", num_ops, 0, "2")
        self.magnitude = _number("aug.magnitude", magnitude, "9")
        if not 0.0 <= self.magnitude <= MAX_LEVEL:
            raise PhiscaleError(f"aug.magnitude={magnitude!r} must be in [0, {MAX_LEVEL:g}] (RandAugment's M "
                                "on the 0..10 scale, where 10 is each op's full range), e.g. aug.magnitude=9")
        self.magnitude_std = _number("aug.magnitude_std", magnitude_std, "0.5")
        if self.magnitude_std < 0 or math.isinf(self.magnitude_std):
            raise PhiscaleError(f"aug.magnitude_std={magnitude_std!r} must be >= 0 (0 = the fixed magnitude), "
                                "e.g. aug.magnitude_std=0.5")
        self.mixup = _alpha("aug.mixup", mixup, "mixup")
        self.cutmix = _alpha("aug.cutmix", cutmix, "CutMix")
        self.mix_prob = _probability("aug.mix_prob", mix_prob, "1.0")
        self.switch_prob = _probability("aug.switch_prob", switch_prob, "0.5")
        self.erasing = _probability("aug.erasing", erasing, "0.25")
        if interpolation not in INTERPOLATIONS:
            raise PhiscaleError(f"aug.interpolation={interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        self.interpolation = interpolation
        self.fill = _number("aug.fill", fill, "128")
        if not 0 <= self.fill <= 255:
            raise PhiscaleError(f"aug.fill={fill!r} must be a pixel value in 0..255, e.g. aug.fill=128")
        self.num_classes = _integer("data.num_classes", num_classes, 1, "1000")
        self.label_smoothing = _number("optim.label_smoothing", label_smoothing, "0.1")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise PhiscaleError(f"optim.label_smoothing={label_smoothing!r} must be in [0, 1), "
                                "e.g. optim.label_smoothing=0.1")
        seed = _integer("seed", seed, 0, "0")
        rank = 0 if rank is None else _integer("rank", rank, 0, "0")
        self.seed = (seed + rank) % 2**64
        self.soft_targets = self.mixup > 0 or self.cutmix > 0  # True: targets are [N, C] floats
        self._plan = torch.Generator().manual_seed(self.seed)
        self._pixels: torch.Generator | None = None
        self._pending_pixels: tuple[str, torch.Tensor] | None = None

    # -- settings and state ------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """False when every setting is off: the batch would come back unchanged."""
        return self.policy != "none" or self.erasing > 0 or self.soft_targets

    def params(self) -> dict[str, str]:
        """The settings as MLflow params (`aug.*`, strings)."""
        settings = {
            "policy": self.policy, "num_ops": self.num_ops, "magnitude": self.magnitude,
            "magnitude_std": self.magnitude_std, "mixup": self.mixup, "cutmix": self.cutmix,
            "mix_prob": self.mix_prob, "switch_prob": self.switch_prob, "erasing": self.erasing,
            "interpolation": self.interpolation, "fill": self.fill,
        }
        return {f"aug.{key}": f"{value:g}" if isinstance(value, float) else str(value)
                for key, value in settings.items()}

    def state_dict(self) -> dict[str, Any]:
        """The generators' states (tensors and strings only: loads with torch.load(weights_only=True))."""
        pixels = self._pixels
        return {
            "seed": self.seed,
            "plan": self._plan.get_state(),
            "pixels": None if pixels is None else pixels.get_state(),
            "pixels_device": None if pixels is None else pixels.device.type,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the streams saved by `state_dict()`. The erasing pixel stream continues only on
        the same device type (a CUDA stream cannot drive a CPU generator); elsewhere it starts anew."""
        self._plan.set_state(state["plan"])
        self._pixels = None
        self._pending_pixels = None
        if state.get("pixels") is not None:
            self._pending_pixels = (state["pixels_device"], state["pixels"])

    def _pixel_generator(self, device: torch.device) -> torch.Generator:
        g = self._pixels
        if g is not None and g.device.type == device.type and (g.device.index or 0) == (device.index or 0):
            return g
        g = torch.Generator(device=device).manual_seed((self.seed + _PIXEL_STREAM) % 2**64)
        if self._pending_pixels is not None and self._pending_pixels[0] == device.type:
            g.set_state(self._pending_pixels[1])
        self._pending_pixels = None
        self._pixels = g
        return g

    # -- the batch -----------------------------------------------------------------------------
    def _policy_layers(self, n: int) -> list[Layer]:
        if self.policy == "autoaugment":
            return autoaugment_plan(n, self._plan)
        if self.policy == "randaugment":
            return randaugment_plan(n, self._plan, num_ops=self.num_ops, magnitude=self.magnitude,
                                    magnitude_std=self.magnitude_std)
        return []

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch(images, labels, self.num_classes)
        n, _, height, width = images.shape
        with torch.no_grad():
            # Every CPU draw first, in a fixed order: the plan stream advances alike on any device.
            layers = self._policy_layers(n)
            boxes = (erasing_ops.sample_boxes(n, height, width, self.erasing, self._plan)
                     if self.erasing > 0 else None)
            mix = sample_mix(self._plan, height=height, width=width, mixup=self.mixup, cutmix=self.cutmix,
                             mix_prob=self.mix_prob, switch_prob=self.switch_prob)
            if layers or boxes is not None or mix.kind != "none":
                images = images.clone()  # never write into the loader's buffer
            for layer in layers:
                apply_layer(images, layer, interpolation=self.interpolation, fill=self.fill)
            if boxes is not None:
                erasing_ops.erase_(images, boxes, self._pixel_generator(images.device))
            if not self.soft_targets:
                return images, labels
            targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
            return apply_mix(images, targets, mix)


def _check_batch(images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise PhiscaleError(
            f"BatchAugment takes uint8 images [N,3,H,W] (before normalisation); got {images.dtype} "
            f"{list(images.shape)}: call it on the loader's batch before Normalize"
        )
    if labels.dtype != torch.int64 or labels.shape != images.shape[:1]:
        raise PhiscaleError(f"BatchAugment takes int64 labels [N] matching the images; got {labels.dtype} "
                            f"{list(labels.shape)} for {images.shape[0]} images")
    if labels.device.type == "cpu" and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise PhiscaleError(f"labels must be in [0, data.num_classes={num_classes}); got "
                            f"{int(labels.min())}..{int(labels.max())}: check data.num_classes")
