"""What both loaders share: argument checks in one line, rank sharding of the val set, and on-device
normalisation to channels_last."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phiscale.data import ensure_digits, make_val_loader
from phiscale.data.batch_loader import (
    Normalize,
    batches_left,
    check_loader_args,
    epoch_order,
    rank_and_world_size,
    val_shard,
)
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



# ---------------------------------------------------------------- the train epoch's order -----
def consumed(num_samples: int, *, world: int, steps: int, start: int = 0, batch: int = 4, epoch: int = 2) -> list[int]:
    """The samples every rank of `world` reads in `steps` batches of an epoch begun at `start`."""
    seen = []
    for rank in range(world):
        seen += epoch_order(num_samples, seed=7, epoch=epoch, rank=rank, world_size=world, batch_size=batch,
                            start=start)[: steps * batch].tolist()
    return seen


def test_one_rank_keeps_the_order_single_rank_runs_always_had():
    """FFCV's single-rank Random order and the torch loader's: NumPy's default_rng(seed + epoch)."""
    assert epoch_order(50, seed=7, epoch=2, batch_size=4).tolist() == \
        np.random.default_rng(9).permutation(50)[:48].tolist()


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2), (2, 3)], ids=["2->1", "1->2", "2->3"])
@pytest.mark.parametrize("steps_before", [0, 1, 3, 5])
def test_a_resume_at_another_world_size_reads_each_sample_of_the_epoch_once(before, after, steps_before):
    n, batch = 101, 4
    first = consumed(n, world=before, steps=steps_before)
    start = steps_before * before * batch  # what the checkpoint records: the epoch's samples consumed
    order = np.random.default_rng(9).permutation(n)
    assert sorted(first) == sorted(order[:start].tolist()), "k steps of every rank consume the order's prefix"
    left = batches_left(n, start, after, batch)
    rest = consumed(n, world=after, steps=left, start=start)
    epoch = first + rest
    assert len(epoch) == len(set(epoch)), "a sample was seen twice within the epoch"
    unseen = set(range(n)) - set(epoch)
    assert len(unseen) < after * batch, "only the tail short of one global batch is dropped"
    assert unseen == set(order[start + left * after * batch:].tolist())


def test_every_rank_reads_the_same_number_of_whole_batches():
    for start in (0, 8, 13):
        lengths = {len(epoch_order(101, seed=0, epoch=0, rank=r, world_size=3, batch_size=4, start=start))
                   for r in range(3)}
        assert lengths == {batches_left(101, start, 3, 4) * 4}
