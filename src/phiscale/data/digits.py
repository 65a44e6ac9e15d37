"""The embedded default dataset: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans,
10 classes, no download) as an RGB ImageFolder of 32x32 JPEGs and two `.beton`s, built once."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from phiscale.paths import cache_dir

VERSION = "v1"  # bump when the layout or the split below changes
SIDE = 32  # 8x8 upscaled; the digits config's base_resolution
VAL_FRACTION = 0.2
SEED = 0
CLASSES = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DigitsDataset:
    train_dir: Path
    val_dir: Path
    train_beton: Path | None  # None when built without FFCV (`ensure_digits(betons=False)`)
    val_beton: Path | None
    classes: tuple[str, ...]


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


def _write_image_folders(root: Path) -> None:
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


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """One builder at a time across processes (DDP ranks, SLURM array tasks on a shared cache)."""
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_digits(*, betons: bool = True) -> DigitsDataset:
    """The digits ImageFolders (and `.beton`s when `betons`), built on first use under
    `cache_dir('data', 'digits')`; idempotent, and safe when several processes call it at once."""
    base = cache_dir("data", "digits")
    root = base / VERSION
    folders, train_beton, val_beton = root / "images", root / "train.beton", root / "val.beton"
    done = folders.is_dir() and (not betons or (train_beton.exists() and val_beton.exists()))
    if not done:
        with _locked(base / f".{VERSION}.lock"):
            if not folders.is_dir():
                tmp = base / f".{VERSION}-images-{os.getpid()}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                _write_image_folders(tmp)
                root.mkdir(exist_ok=True)
                os.rename(tmp, folders)
                (root / "classes.json").write_text(json.dumps({"classes": list(CLASSES)}))
            if betons:
                from phiscale.data.beton_writer import write_beton

                for split, beton in (("train", train_beton), ("val", val_beton)):
                    if not beton.exists():
                        write_beton(folders / split, beton, max_resolution=SIDE, compress_probability=0.0,
                                    num_workers=1, force=True, progress=False, page_size=2**21)
    return DigitsDataset(
        train_dir=folders / "train",
        val_dir=folders / "val",
        train_beton=train_beton if betons or train_beton.exists() else None,
        val_beton=val_beton if betons or val_beton.exists() else None,
        classes=CLASSES,
    )
