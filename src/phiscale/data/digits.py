"""The embedded default dataset: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
10 classes, no download) as an RGB ImageFolder of 32x32 JPEGs and two `.beton`s, built once
(by `phiscale.data.embedded`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from phiscale.data.embedded import EmbeddedDataset, EmbeddedSpec, ensure_embedded

VERSION = "v1"  # bump when the layout or the split below changes
SIDE = 32  # 8x8 upscaled; the digits config's base_resolution
VAL_FRACTION = 0.2
SEED = 0
CLASSES = tuple(str(d) for d in range(10))
DigitsDataset = EmbeddedDataset  # the built files, under the name callers of `ensure_digits` know


def split_indices(labels: np.ndarray, val_fraction: float = VAL_FRACTION, seed: int = SEED):
    """A fixed stratified split: per class, a seeded shuffle, the first round(n*fraction) go to val."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = round(len(idx) * val_fraction)
        val += idx[:n_val].tolist()
        train += idx[n_val:].tolist()
    return np.sort(train), np.sort(val)


def _write_image_folders(root: Path, source_dir: Path | None = None) -> None:
    """The digits come with scikit-learn: `source_dir` is not used."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).round().clip(0, 255).astype(np.uint8)  # values 0..16
    labels = digits.target.astype(np.int64)
    for split, indices in zip(("train", "val"), split_indices(labels), strict=True):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in indices:
            img = Image.fromarray(images[i], mode="L").resize((SIDE, SIDE), Image.BICUBIC).convert("RGB")
            img.save(root / split / str(labels[i]) / f"{i:04d}.jpg", quality=95)


SPEC = EmbeddedSpec(name="digits", version=VERSION, side=SIDE, classes=CLASSES, folders=CLASSES,
                    num_images=1797, write_images=_write_image_folders)


def ensure_digits(*, betons: bool = True) -> DigitsDataset:
    """The digits ImageFolders (and `.beton`s when `betons`), built on first use under
    `cache_dir('data', 'digits')`; idempotent, and safe when several processes call it at once."""
    return ensure_embedded("digits", betons=betons)
