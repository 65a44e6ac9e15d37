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


# ---------------------------------------------------------------- another number of ranks -----
class Counter:
    """Lightning's batches-done counter of the epoch, as the DataModule reads and shifts it."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def shift(self, n: int) -> None:
        self.value += n


def rank_loaders(folder: Path, world: int, monkeypatch, counter: Counter) -> list[ResumableLoader]:
    """One train loader per rank of `world`, built in this process as each rank would build its own."""
    from phiscale.data import torch_loaders

    loaders = []
    for rank in range(world):
        monkeypatch.setattr(torch_loaders, "rank_and_world_size", lambda distributed, r=rank: (r, world))
        plain = make_train_loader(folder, batch_size=4, resolution=16, seed=5, distributed=world > 1, **ARGS)
        loaders.append(ResumableLoader(plain, batches_done=lambda: counter.value, shift_batches=counter.shift))
    return loaders


@pytest.fixture
def sample_record(monkeypatch) -> list[int]:
    """Every sample index the train loaders decode, in order."""
    from phiscale.data.torch_loaders import ImageFolderSamples

    seen: list[int] = []
    original = ImageFolderSamples.__getitem__

    def record(self, i):
        if self.train:
            seen.append(int(i))
        return original(self, i)

    monkeypatch.setattr(ImageFolderSamples, "__getitem__", record)
    return seen


@pytest.mark.parametrize(("before", "after", "steps"), [(2, 1, 3), (1, 2, 5), (2, 2, 3)],
                         ids=["2->1", "1->2", "same"])
def test_a_resume_on_another_number_of_ranks_reads_the_rest_of_the_epoch_once(
        few_digits, monkeypatch, sample_record, before, after, steps):
    written = Counter()
    writers = rank_loaders(few_digits, before, monkeypatch, written)
    for loader in writers:
        loader.set_epoch(1)
        batches = iter(loader)
        for _ in range(steps):
            next(batches)
    written.value = steps
    state = writers[0].state_dict()  # rank 0 writes the checkpoint
    assert state["samples_done"] == steps * before * 4 and state["batches_done"] == steps
    before_resume = list(sample_record)

    resumed = Counter(steps)  # as Lightning restores it
    readers = rank_loaders(few_digits, after, monkeypatch, resumed)
    sample_record.clear()
    counts = []
    for loader in readers:
        resumed.value = steps  # each rank restores its own counter (this test shares one)
        loader.set_epoch(1)
        loader.load_state_dict(state)
        counts.append(sum(1 for _ in loader))
    assert len(set(counts)) == 1, "every rank reads the same number of batches"
    epoch = before_resume + sample_record
    assert len(epoch) == len(set(epoch)), "a sample was seen twice within the epoch"
    assert 60 - len(epoch) < after * 4, "only the tail short of one global batch is left out"
    assert resumed.value + counts[0] == len(readers[0]), "Lightning's counter ends the epoch with the data"
    if before == after:
        assert resumed.value == steps, "the same world size: no re-count"

    sample_record.clear()
    resumed.value = 0
    for loader in readers:
        loader.set_epoch(2)
        assert sum(1 for _ in loader) == len(loader), "the next epoch is whole"
    assert readers[0].state_dict()["samples_done"] == 0
