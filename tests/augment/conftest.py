"""Test images for the augmentation tests: the embedded digits scaled up and coloured, noise and
gradients, on a non-square canvas (so a swapped H/W shows), as a uint8 batch and as PIL images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from support.threads import one_torch_thread  # noqa: F401  (autouse: small tensors, one thread)

HEIGHT, WIDTH = 40, 48


def _digit(index: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    scan = (load_digits().images[index] / 16.0 * 255.0).round().astype(np.uint8)  # 8x8, values 0..16
    return np.asarray(Image.fromarray(scan, mode="L").resize((WIDTH, HEIGHT), Image.BICUBIC))


def make_images() -> np.ndarray:
    """[N, H, W, 3] uint8: two coloured digit scans, a digit on a gradient, uniform noise, a smooth
    gradient and a few-level image (equalize's and autocontrast's edge cases)."""
    rng = np.random.default_rng(0)
    d0, d1, d2 = _digit(0), _digit(7), _digit(42)
    ramp_x = np.linspace(0, 1, WIDTH)[None, :]
    ramp_y = np.linspace(0, 1, HEIGHT)[:, None]
    gradient = np.stack([40 + 180 * ramp_x + 0 * ramp_y, 200 - 150 * ramp_y + 0 * ramp_x,
                         90 + 60 * ramp_x * ramp_y], axis=-1)
    images = [
        np.stack([d0, 255 - d0, d0 // 2 + 60], axis=-1),
        np.stack([d1 // 3 + 20, d1, np.full_like(d1, 130)], axis=-1),
        (0.6 * gradient + 0.4 * d2[..., None]),
        rng.integers(0, 256, (HEIGHT, WIDTH, 3)),
        gradient,
        rng.integers(0, 3, (HEIGHT, WIDTH, 3)) * 60 + 40,
    ]
    return np.stack([np.clip(np.round(im), 0, 255).astype(np.uint8) for im in images])


@pytest.fixture(scope="session")
def arrays() -> np.ndarray:
    return make_images()


@pytest.fixture
def batch(arrays) -> torch.Tensor:
    """The test images as a contiguous uint8 batch [N, 3, H, W]."""
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


@pytest.fixture
def pil_images(arrays) -> list[Image.Image]:
    return [Image.fromarray(a) for a in arrays]
