"""Room for a run's checkpoints: the estimate before the first step against the checkpoint Lightning
then writes, the warning when the dir cannot hold three, and a checkpoint write that does not fit on
a real full disk (a small tmpfs): one line with the figures, the previous checkpoint whole."""

from __future__ import annotations

import errno
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from omegaconf import OmegaConf
from support.small_fs import tmpfs

from phiscale.errors import DiskFull
from phiscale.paths import free_bytes
from phiscale.train.checkpoint_io import checkpoint_step, write_checkpoint
from phiscale.train.disk_room import CheckpointRoom, checkpoint_bytes, checkpoint_disk_full, room_warning

ROOT = Path(__file__).resolve().parents[2]


def classifier(optim: str, **optim_overrides):
    """The FAST config's network (mobilenet_v3_small, width 0.5) with a repository recipe."""
    from phiscale.models import build_model
    from phiscale.train.module import ImageClassifier

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optim" / f"{optim}.yaml")) | optim_overrides
    torch.manual_seed(0)
    return ImageClassifier(build_model("mobilenet_v3_small", 10, width_mult=0.5), optim_cfg=cfg, global_batch_size=8)


class Estimate(L.Callback):
    def on_train_start(self, trainer, pl_module):
        self.bytes = checkpoint_bytes(pl_module, trainer.optimizers)


@pytest.mark.parametrize(("optim", "overrides"), [("sgd_cosine", {}), ("rmsprop_tf", {"ema_decay": 0.99})],
                         ids=["sgd-momentum", "rmsprop-tf-and-ema"])
def test_the_estimate_before_the_first_step_is_the_checkpoint_written_after_it(
        tmp_path, fixed_batches, cpu_trainer, optim, overrides):
    estimate = Estimate()
    trainer = cpu_trainer(max_steps=2, callbacks=[estimate])
    trainer.fit(classifier(optim, **overrides), train_dataloaders=fixed_batches(2, res=32))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    written = (tmp_path / "last.ckpt").stat().st_size
    assert written == pytest.approx(estimate.bytes, rel=0.02), f"estimated {estimate.bytes}, written {written}"


def test_no_room_for_three_is_said_before_the_first_step_and_a_write_that_does_not_fit_is_one_line(
        tmp_path, fixed_batches, cpu_trainer):
    with tmpfs(tmp_path / "small", "8m") as disk:
        ckpt_dir = disk / "checkpoints"
        ckpt_dir.mkdir()
        said: list[str] = []
        estimate = Estimate()
        trainer = cpu_trainer(max_steps=1, callbacks=[estimate, CheckpointRoom(ckpt_dir, print_fn=lambda s, **_: said.append(s))])
        trainer.fit(classifier("sgd_cosine"), train_dataloaders=fixed_batches(1, res=32))
        size = estimate.bytes  # ~3.3 MiB: three need ~10 MiB, the disk has 8
        assert len(said) == 1 and said[0].startswith(f"phiscale: warning: {ckpt_dir} has 8.0 MiB free and this "
                                                     "run's checkpoints need 10.0 MiB more (last.ckpt, its temporary "
                                                     "and best.ckpt, about 3.3 MiB each); training goes on"), said
        assert "set paths.output_dir to a larger disk" in said[0]

        checkpoint = trainer._checkpoint_connector.dump_checkpoint()
        write_checkpoint(checkpoint, ckpt_dir / "last.ckpt")
        write_checkpoint(checkpoint, ckpt_dir / "best.ckpt")
        assert room_warning(ckpt_dir, size, free_bytes(ckpt_dir)) is not None, "a third still does not fit"
        assert room_warning(ckpt_dir, size, 10**9) is None
        checkpoint["global_step"] = 2
        with pytest.raises(DiskFull) as err:
            write_checkpoint(checkpoint, ckpt_dir / "last.ckpt")
        written = (ckpt_dir / "last.ckpt").stat().st_size
        free = free_bytes(ckpt_dir)
        assert free < written and err.value.needed == written and err.value.free == free
        assert str(err.value) == (
            f"the disk is full: writing last.ckpt in {ckpt_dir} needed 3.3 MiB and {free / 2**20:.1f} MiB is free; "
            "this run's checkpoints need 10.0 MiB there (last.ckpt, its temporary and best.ckpt, 3.3 MiB each); "
            "free space there (or write elsewhere) and run the command again")
        assert checkpoint_step(ckpt_dir / "last.ckpt") == 1, "the previous last.ckpt is whole"
        assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best.ckpt", "last.ckpt"], "the temporary is removed"

        # A file system that says it otherwise (no errno): the room left decides.
        odd = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
        assert checkpoint_disk_full(odd, ckpt_dir / "last.ckpt", checkpoint).code == errno.ENOSPC
    assert checkpoint_disk_full(odd, tmp_path / "last.ckpt", checkpoint) is None, "room enough: not the disk"
    assert checkpoint_disk_full(ValueError("a bug"), tmp_path / "last.ckpt", checkpoint) is None
