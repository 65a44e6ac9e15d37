"""The DataModule's loaders: resume skipping, Lightning's set_epoch reaching the loader, and one
pair of loaders per data config at the planned resolutions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from phiscale.data import BatchLoader, ensure_digits, make_train_loader
from phiscale.train.datamodule import ImageDataModule, ResumableLoader

ARGS = dict(loader="torch", mean=[79.0] * 3, std=[88.9] * 3, device="cpu", num_workers=0)


def labels_of(loader) -> list[list[int]]:
    return [y.tolist() for _, y in loader]


@pytest.fixture
def few_digits(tmp_path) -> Path:
    """Six val images of each digit as an ImageFolder (60 images: quick epochs)."""
    val = ensure_digits(betons=False).val_dir
    for digit in sorted(p for p in val.iterdir() if p.is_dir()):
        (tmp_path / "few" / digit.name).mkdir(parents=True)
        for image in sorted(digit.iterdir())[:6]:
            shutil.copy(image, tmp_path / "few" / digit.name)
    return tmp_path / "few"


def train_loader(folder: Path, seed: int = 0):
    return make_train_loader(folder, batch_size=8, resolution=16, seed=seed, **ARGS)


def test_resumable_loader_skips_the_batches_a_checkpoint_saw_once(few_digits):
    plain, wrapped = train_loader(few_digits), ResumableLoader(train_loader(few_digits))
    epoch0, epoch1 = labels_of(plain), labels_of(plain)
    assert len(wrapped) == len(plain) == 7  # 60 images, 8 a batch, the last partial one dropped
    wrapped.skip_batches = 2
    assert labels_of(wrapped) == epoch0[2:], "the first epoch after a resume starts at the saved batch"
    assert labels_of(wrapped) == epoch1, "and only that epoch: the next one is whole"


def test_set_epoch_and_set_resolution_reach_the_wrapped_loader(few_digits):
    plain, wrapped = train_loader(few_digits, seed=3), ResumableLoader(train_loader(few_digits, seed=3))
    orders = [labels_of(plain) for _ in range(3)]
    assert wrapped.sampler is wrapped, "Lightning calls dataloader.sampler.set_epoch(epoch)"
    wrapped.sampler.set_epoch(2)
    assert labels_of(wrapped) == orders[2]
    wrapped.set_epoch(1)
    assert labels_of(wrapped) == orders[1]
    wrapped.set_resolution(24)
    assert next(iter(wrapped))[0].shape[-2:] == (24, 24)


def test_setup_builds_the_train_and_val_loaders_of_the_data_config(fast_cfg):
    data = OmegaConf.to_container(fast_cfg("data.loader=torch", "data.num_workers=0").data, resolve=True)
    module = ImageDataModule(data, train_resolution=24, eval_resolution=40, seed=1)
    module.setup("validate")
    assert module.train_loader is None and isinstance(module.val_dataloader(), BatchLoader)
    module.setup("fit")
    train = module.train_dataloader()
    assert isinstance(train, ResumableLoader) and isinstance(train.loader, BatchLoader)
    images, labels = next(iter(train))
    assert images.shape == (32, 3, 24, 24) and labels.dtype == torch.int64  # data.batch_size=32
    val_images, _ = next(iter(module.val_dataloader()))
    assert val_images.shape[-2:] == (40, 40)
    assert module.val_dataloader().num_samples == 359, "every val image, once"
    module.setup("fit")
    assert module.train_dataloader() is train, "a second setup keeps the loaders (and their epoch)"
