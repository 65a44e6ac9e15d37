"""The plain PyTorch loader keeps the same contract as the FFCV one (and needs no FFCV), and names
what it cannot read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from phiscale.data import BatchLoader, ensure_digits, make_train_loader, make_val_loader
from phiscale.data.imagefolder import scan_image_folder
from phiscale.data.torch_loaders import center_crop, random_resized_crop_box
from phiscale.errors import PhiscaleError

CPU = torch.device("cpu")
ARGS = dict(loader="torch", mean=[79.0] * 3, std=[88.9] * 3, device=CPU, num_workers=0)


def test_torch_loaders_give_channels_last_float32_batches_and_every_val_sample():
    digits = ensure_digits(betons=False)
    train = make_train_loader(digits.train_dir, batch_size=200, resolution=24, num_classes=10, **ARGS)
    val = make_val_loader(digits.val_dir, batch_size=100, resolution=28, num_classes=10, **ARGS)
    assert isinstance(train, BatchLoader) and isinstance(val, BatchLoader)
    assert (len(train), len(val), val.num_samples) == (7, 4, 359)
    images, labels = next(iter(train))
    assert images.shape == (200, 3, 24, 24) and images.dtype == torch.float32
    assert images.is_contiguous(memory_format=torch.channels_last) and labels.dtype == torch.int64
    val_labels = torch.cat([y for _, y in val])
    expected = [label for _, label in scan_image_folder(digits.val_dir).samples]
    assert val_labels.tolist() == expected


def test_torch_train_order_and_crops_replay_after_set_epoch(small_folder):
    train = make_train_loader(small_folder, batch_size=4, resolution=16, seed=5, **ARGS)
    first = [x.clone() for x, _ in train]
    train.set_epoch(0)
    again = [x.clone() for x, _ in train]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    train.set_resolution(12)
    assert next(iter(train))[0].shape[-1] == 12


def test_random_resized_crop_box_stays_inside_and_respects_scale():
    rng = np.random.default_rng(0)
    for width, height in [(500, 375), (100, 400), (32, 32)]:
        for _ in range(200):
            left, top, w, h = random_resized_crop_box(rng, width, height)
            assert 0 <= left and left + w <= width and 0 <= top and top + h <= height
            assert w * h <= width * height and w > 0 and h > 0


def test_center_crop_keeps_the_middle():
    img = Image.fromarray(np.arange(64 * 48 * 3, dtype=np.uint32).reshape(48, 64, 3).astype(np.uint8))
    assert center_crop(img, 28, 0.875).size == (28, 28)


def test_a_beton_or_too_many_classes_are_refused_at_open(tmp_path):
    with pytest.raises(PhiscaleError, match="data.loader=ffcv"):
        make_val_loader(tmp_path / "x.beton", batch_size=8, resolution=32, **ARGS)
    digits = ensure_digits(betons=False)
    with pytest.raises(PhiscaleError, match=r"10 classes but num_classes=5"):
        make_val_loader(digits.val_dir, num_classes=5, batch_size=8, resolution=32, **ARGS)


def test_an_unreadable_image_is_named(small_folder):
    broken = small_folder / "class_001" / "img_000.png"
    broken.write_bytes(b"\x89PNG not really")
    val = make_val_loader(small_folder, batch_size=16, resolution=16, **ARGS)
    with pytest.raises(PhiscaleError, match=rf"'{broken}' is not a readable image .*: remove or replace it"):
        next(iter(val))


def test_a_val_loader_keeps_its_resolution(small_folder):
    val = make_val_loader(small_folder, batch_size=4, resolution=16, **ARGS)
    with pytest.raises(PhiscaleError, match="set_resolution is for train loaders"):
        val.set_resolution(24)
    assert (len(val), val.num_samples) == (4, 16) and next(iter(val))[0].shape[-1] == 16
