"""Small generated ImageFolders for the data tests (smooth images, so resampling differences stay small)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


def smooth_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A low-frequency RGB pattern: bilinear resamplers of any library agree on it within a few levels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = rng.uniform(0, 2 * np.pi, 3)
    freq = rng.uniform(0.5, 2.0, 3)
    channels = [127.5 + 100 * np.sin(freq[c] * 2 * np.pi * (x / width + y / height) / 2 + phase[c]) for c in range(3)]
    return Image.fromarray(np.stack(channels, -1).round().astype(np.uint8))


def _make_image_folder(root: Path, sizes_per_class: list[list[tuple[int, int]]], seed: int = 0, ext: str = ".png") -> Path:
    rng = np.random.default_rng(seed)
    for c, sizes in enumerate(sizes_per_class):
        (root / f"class_{c:03d}").mkdir(parents=True, exist_ok=True)
        for i, (w, h) in enumerate(sizes):
            smooth_image(rng, w, h).save(root / f"class_{c:03d}" / f"img_{i:03d}{ext}")
    return root


@pytest.fixture
def make_image_folder():
    """`make_image_folder(root, [[(w, h), ...] per class], seed=0, ext=".png") -> root`."""
    return _make_image_folder


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """3 classes with 4, 7 and 5 images of mixed sizes (16 in all)."""
    sizes = [[(40, 30), (30, 50), (64, 64), (50, 41)], [(33, 47)] * 3 + [(70, 35)] * 4, [(45, 45)] * 5]
    return _make_image_folder(tmp_path / "folder", sizes)
