"""What both loaders share: argument checks in one line, rank sharding of the val set, and on-device
normalisation to channels_last."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phiscale.data import ensure_digits, make_val_loader
from phiscale.data.batch_loader import Normalize, check_loader_args, rank_and_world_size, val_shard
from phiscale.errors import PhiscaleError

ARGS = dict(batch_size=8, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3, device="cpu")
GOOD = dict(batch_size=8, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3)


def test_mean_and_std_in_0_1_units_and_an_uninitialised_process_group_name_the_fix(tmp_path):
    with pytest.raises(PhiscaleError, match="0-255 units"):
        make_val_loader(tmp_path, **{**ARGS, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    with pytest.raises(PhiscaleError, match="torch.distributed is not initialised"):
        make_val_loader(ensure_digits(betons=False).val_dir, loader="torch", distributed=True, **ARGS)
    assert not torch.distributed.is_initialized()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"batch_size": 0}, r"data.batch_size=0 must be >= 1 \(per device\)"),
        ({"num_workers": -1}, "data.num_workers=-1 must be >= 0"),
        ({"resolution": 4}, "resolution=4 is too small: use at least 8 pixels"),
        ({"mean": [1.0, 2.0]}, r"data.mean=\[1.0, 2.0\] needs 3 values"),
        ({"std": [58.0, 0.0, 57.0]}, "data.std=.* must be positive"),
        ({"order": "sorted"}, "data.order='sorted' is not one of random, quasi_random"),
        ({"crop_ratio": 1.5}, r"data.crop_ratio=1.5 must be in \(0, 1\]"),
    ],
)
def test_each_bad_argument_is_named(bad, message):
    with pytest.raises(PhiscaleError, match=message):
        check_loader_args(**(GOOD | bad))
    check_loader_args(**GOOD)


def test_val_shards_cover_every_sample_once_without_padding():
    shards = [val_shard(13, rank, 3) for rank in range(3)]
    assert [len(s) for s in shards] == [5, 4, 4]
    assert sorted(np.concatenate(shards).tolist()) == list(range(13))
    assert rank_and_world_size(False) == (0, 1)


def test_normalize_gives_channels_last_in_0_255_units():
    images = torch.full((2, 3, 4, 4), 100, dtype=torch.uint8)
    out = Normalize([100.0, 50.0, 0.0], [1.0, 2.0, 4.0], torch.device("cpu"), torch.float32)(images)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert out[0, :, 0, 0].tolist() == [0.0, 25.0, 25.0]

