"""The two calls the trainer makes: each backend behind the same signature, arguments checked once;
with two ranks (gloo, one process each) and distributed=True one val epoch covers every sample once."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from phiscale.data import BatchLoader, ensure_digits, make_train_loader, make_val_loader, write_beton
from phiscale.errors import PhiscaleError

ARGS = dict(batch_size=8, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3, device="cpu")

WORLD = 2
# One rank: open train and val loaders for each source, record what this rank reads in one epoch.
RANK = """
import json, sys, torch, torch.distributed as dist
from phiscale.data import make_train_loader, make_val_loader
rank, init_file, sources, out = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
args = dict(batch_size=4, num_workers=1, resolution=16, mean=[127.0] * 3, std=[64.0] * 3, device="cpu")
result = {}
for loader, path in sources.items():
    val = make_val_loader(path, loader=loader, distributed=True, **args)
    train = make_train_loader(path, loader=loader, distributed=True, seed=1, **args)
    result[loader] = dict(val=torch.cat([y.clone() for _, y in val]).tolist(), val_len=len(val),
                          val_samples=val.num_samples, train_len=len(train), train_samples=train.num_samples,
                          train=torch.cat([y.clone() for _, y in train]).tolist())
dist.barrier()
dist.destroy_process_group()
json.dump(result, open(out, "w"))
"""


@pytest.mark.slow
def test_two_ranks_see_every_val_sample_exactly_once(tmp_path, make_image_folder):
    # 13 classes of one image each: the label is the sample's identity; 13 is odd, so ranks differ.
    folder = make_image_folder(tmp_path / "ids", [[(20 + i, 24)] for i in range(13)])
    sources = {"torch": str(folder)}
    try:
        import ffcv  # noqa: F401

        sources["ffcv"] = str(write_beton(folder, tmp_path / "ids.beton", num_workers=1, progress=False))
    except ImportError:
        pass
    outs = [tmp_path / f"rank{r}.json" for r in range(WORLD)]
    procs = [subprocess.Popen([sys.executable, "-c", RANK, str(r), str(tmp_path / "rendezvous"), json.dumps(sources),
                               str(outs[r])]) for r in range(WORLD)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    results = [json.loads(out.read_text()) for out in outs]
    for loader in sources:
        ranks = [r[loader] for r in results]
        seen = ranks[0]["val"] + ranks[1]["val"]
        assert sorted(seen) == list(range(13)), f"{loader}: one val epoch across ranks saw {sorted(seen)}"
        assert [r["val_samples"] for r in ranks] == [7, 6], f"{loader}: per-rank val sizes (no padding)"
        assert [r["val_len"] for r in ranks] == [2, 2]
        # Train: every W-th sample of one permutation per epoch, no padding (13 // 2 per rank), and the
        # tail short of a whole global batch dropped, so both ranks take one batch of 4.
        assert [r["train_samples"] for r in ranks] == [6, 6] and [r["train_len"] for r in ranks] == [1, 1]
        train_seen = ranks[0]["train"] + ranks[1]["train"]
        assert len(train_seen) == 8 and len(set(train_seen)) == 8, f"{loader}: ranks overlap in train"


def test_both_loaders_are_batch_loaders_of_the_same_val_set():
    digits = ensure_digits()
    ffcv = make_val_loader(digits.val_beton, loader="ffcv", **ARGS)
    plain = make_val_loader(digits.val_dir, loader="torch", **ARGS)
    assert isinstance(ffcv, BatchLoader) and isinstance(plain, BatchLoader)
    assert (len(ffcv), ffcv.num_samples) == (len(plain), plain.num_samples) == (45, 359)


def test_an_unknown_loader_is_named(tmp_path):
    with pytest.raises(PhiscaleError, match="data.loader='tf'"):
        make_val_loader(tmp_path, loader="tf", **ARGS)


@pytest.mark.parametrize("scale", [0.0, 1.5])
def test_a_crop_scale_outside_0_1_is_refused(scale):
    with pytest.raises(PhiscaleError, match=rf"data.min_crop_scale={scale} must be in \(0, 1\]; ImageNet uses 0.08"):
        make_train_loader(ensure_digits(betons=False).train_dir, loader="torch", min_crop_scale=scale, **ARGS)


@pytest.mark.parametrize("loader", ["ffcv", "torch"])
def test_train_batches_can_stay_uint8_for_augmentation_on_the_device(loader):
    import torch

    digits = ensure_digits()
    source = digits.train_beton if loader == "ffcv" else digits.train_dir
    batches = make_train_loader(source, loader=loader, batch_size=16, num_workers=1, resolution=32,
                                mean=[79.0] * 3, std=[88.9] * 3, device="cpu", normalize=False)
    images, labels = next(iter(batches))
    assert images.dtype == torch.uint8 and images.shape == (16, 3, 32, 32) and labels.dtype == torch.int64
    assert images.is_contiguous(memory_format=torch.channels_last)
    assert int(images.max()) > 1, "0-255 pixel values, not normalised ones"


@pytest.mark.parametrize("loader", ["ffcv", "torch"])
def test_flip_prob_sets_how_often_train_images_are_mirrored(loader):
    import torch

    digits = ensure_digits()
    source = digits.train_beton if loader == "ffcv" else digits.train_dir

    def first_batch(flip_prob: float) -> torch.Tensor:  # the whole image (scale 1): only the flip differs
        batches = make_train_loader(source, loader=loader, batch_size=16, num_workers=1, resolution=32,
                                    mean=[79.0] * 3, std=[88.9] * 3, device="cpu", normalize=False,
                                    min_crop_scale=1.0, flip_prob=flip_prob, seed=3)
        return next(iter(batches))[0].clone()

    never, always = first_batch(0.0), first_batch(1.0)
    assert torch.equal(always, never.flip(-1)), "flip_prob=1 is every image of flip_prob=0 mirrored"
    with pytest.raises(PhiscaleError, match=r"data.flip_prob=1.5 must be in \[0, 1\]"):
        make_train_loader(source, loader=loader, flip_prob=1.5, **ARGS)
