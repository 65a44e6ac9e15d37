"""FFCV loaders: batches have the promised shape, dtype and layout; val crops match a PIL reference;
epochs replay after a resume; settings FFCV cannot honour are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("ffcv")

from phiscale.data import ensure_digits, make_train_loader, make_val_loader, write_beton  # noqa: E402
from phiscale.data.ffcv_loaders import _numba_threads  # noqa: E402
from phiscale.data.imagefolder import scan_image_folder  # noqa: E402
from phiscale.data.torch_loaders import center_crop  # noqa: E402
from phiscale.errors import PhiscaleError  # noqa: E402

CPU = torch.device("cpu")
DIGITS = dict(mean=[79.0] * 3, std=[88.9] * 3, device=CPU, num_workers=2)
ARGS = dict(batch_size=8, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3, device="cpu")


def test_train_and_val_batches_are_normalised_channels_last_float32_with_int64_labels():
    digits = ensure_digits()
    threads = torch.get_num_threads()
    train = make_train_loader(digits.train_beton, batch_size=100, resolution=32, num_classes=10, **DIGITS)
    val = make_val_loader(digits.val_beton, batch_size=100, resolution=28, num_classes=10, **DIGITS)
    assert (len(train), train.num_samples) == (1438 // 100, 1438)  # drop_last on train
    assert (len(val), val.num_samples) == (4, 359)  # the last partial batch kept on val
    for loader, res in ((train, 32), (val, 28)):
        sizes = []
        for images, labels in loader:
            assert images.shape[1:] == (3, res, res) and images.dtype == torch.float32
            assert images.is_contiguous(memory_format=torch.channels_last)
            assert labels.dtype == torch.int64 and labels.shape == (len(images),)
            sizes.append(len(images))
        assert len(sizes) == len(loader)
    assert sizes[-1] == 59
    pixels = images.float() * 88.9 + 79.0  # back to 0-255: normalised with the configured mean/std
    assert -1 <= pixels.min() and pixels.max() <= 256 and 20 < pixels.mean() < 140
    assert torch.get_num_threads() == threads, "FFCV's Loader changed torch's thread count"


def test_set_epoch_replays_an_epoch_and_set_resolution_resizes():
    digits = ensure_digits()
    train = make_train_loader(digits.train_beton, batch_size=256, resolution=32, seed=3, **DIGITS)

    def epoch_labels():
        return torch.cat([y.clone() for _, y in train])

    first, second = epoch_labels(), epoch_labels()
    train.set_epoch(1)
    assert torch.equal(epoch_labels(), second), "a resumed run must see epoch 1's order again"
    assert not torch.equal(first, second), "each epoch should be a new order"
    train.set_resolution(24)
    images, _ = next(iter(train))
    assert images.shape[-2:] == (24, 24)


def test_val_center_crop_matches_a_pil_reference(tmp_path, make_image_folder):
    # Downscaling, as ImageNet val (500 px -> 224): larger than the crop, raw storage (no JPEG loss).
    folder = make_image_folder(tmp_path / "big", [[(160, 120), (120, 200)], [(256, 256), (200, 150)]])
    out = write_beton(folder, tmp_path / "raw.beton", compress_probability=0.0, num_workers=1, progress=False)
    mean, std = [100.0, 110.0, 120.0], [50.0, 60.0, 70.0]
    val = make_val_loader(out, batch_size=16, resolution=64, crop_ratio=0.875, mean=mean, std=std,
                          device=CPU, num_workers=1)
    images, _ = next(iter(val))
    got = images.permute(0, 2, 3, 1).numpy() * np.array(std) + np.array(mean)
    reference = np.stack([np.asarray(center_crop(Image.open(p).convert("RGB"), 64, 0.875), np.float64)
                          for p, _ in scan_image_folder(folder).samples])
    mad = np.abs(got - reference).mean()
    assert mad < 3.0, f"FFCV center crop differs from PIL's by {mad:.2f} levels (of 255) on average"


def test_quasi_random_order_with_distributed_is_refused():
    with pytest.raises(PhiscaleError, match="quasi_random is not implemented by FFCV with distributed"):
        make_train_loader(ensure_digits().train_beton, order="quasi_random", distributed=True, **ARGS)


def test_a_val_loader_keeps_its_resolution():
    val = make_val_loader(ensure_digits().val_beton, **ARGS)
    with pytest.raises(PhiscaleError, match="set_resolution is for train loaders"):
        val.set_resolution(24)


def test_worker_count_is_capped_at_the_cores_numba_saw():
    from numba import config

    assert _numba_threads(0) == 1 and _numba_threads(1) == 1
    assert _numba_threads(10_000) == config.NUMBA_NUM_THREADS


def test_one_rank_keeps_ffcvs_own_random_order_and_a_resume_starts_after_the_samples_done():
    from types import SimpleNamespace

    from ffcv.traversal_order import Random

    from phiscale.data.ffcv_loaders import EpochOrder

    fake = SimpleNamespace(indices=np.arange(50, dtype="uint64"), seed=4, distributed=False)
    ours = EpochOrder(seed=4, rank=0, world_size=1, batch_size=5)(fake)
    assert ours.sample_order(3).tolist() == Random(fake).sample_order(3).tolist(), "single-rank runs keep their order"

    train = make_train_loader(ensure_digits().train_beton, batch_size=256, resolution=32, seed=3, **DIGITS)
    whole = torch.cat([y.clone() for _, y in train])
    train.set_epoch(0)
    assert train.start_epoch_at(512) == len(train) - 2
    assert torch.equal(torch.cat([y.clone() for _, y in train]), whole[512:]), "the epoch resumes after 512 samples"
    assert sum(1 for _ in train) == len(train), "and only that epoch: the next one is whole"
