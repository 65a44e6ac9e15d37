"""A DeepSpeed checkpoint directory with a tag, a shard or its `latest` missing: one line naming what is
missing and the newest complete tag, in phiscale-eval, phiscale-export and phiscale-train (ckpt_path=,
resume=weights), before DeepSpeed reads anything. The directories have DeepSpeed's file names and the
keys read here (a real one needs ranks; tests/train/test_deepspeed.py breaks real ZeRO checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from phiscale.cli.eval import main as eval_main
from phiscale.cli.export import main as export_main
from phiscale.errors import PhiscaleError
from phiscale.train.deepspeed_checkpoint import checked_tag, complete_tags
from phiscale.train.plan import make_plan


def save_tag(ckpt_dir: Path, tag: str, step: int, ranks: int = 2, zero3: bool = False) -> Path:
    """What `engine.save_checkpoint(ckpt_dir, tag)` leaves in `<ckpt_dir>/<tag>` (bf16 optimizer shards)."""
    folder = ckpt_dir / tag
    folder.mkdir(parents=True)
    states = {"module": None, "dp_world_size": ranks, "global_steps": step}
    for rank in range(ranks if zero3 else 1):
        name = f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt" if zero3 else "mp_rank_00_model_states.pt"
        torch.save(states, folder / name)
    for rank in range(ranks):
        torch.save({"optimizer_state_dict": {}}, folder / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (ckpt_dir / "latest").write_text(tag)
    return folder


@pytest.fixture
def two_tags(tmp_path) -> Path:
    """global_step4 and global_step8 (named by `latest`), both whole, in a run's checkpoints/ dir."""
    ckpt_dir = tmp_path / "checkpoints" / "last.ckpt"
    save_tag(ckpt_dir, "global_step4", 4)
    save_tag(ckpt_dir, "global_step8", 8)
    return ckpt_dir


NEWEST_WHOLE = "the newest complete tag is 'global_step{step}' (step {step}): to use it, write its name into " \
               "{d}/latest (echo global_step{step} > {d}/latest)"


@pytest.mark.parametrize(
    ("damage", "missing", "newest"),
    [
        (lambda d: d.joinpath("latest").write_text("global_step12\n"),
         "its `latest` names tag 'global_step12', which is not there (a copy cut short, or a cleanup that went too far)",
         8),
        (lambda d: d.joinpath("global_step8", "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink(),
         "tag 'global_step8' lacks bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt (written by 2 data-parallel ranks; "
         "missing or cut short)", 4),
        (lambda d: (lambda f: f.write_bytes(f.read_bytes()[:200]))(d / "global_step8" / "mp_rank_00_model_states.pt"),
         "tag 'global_step8' lacks a whole mp_rank_00_model_states.pt (missing or cut short)", 4),
        (lambda d: d.joinpath("latest").write_bytes(b"\xff\xfe"), "its `latest` file cannot be read (UnicodeDecodeError)",
         8),
        (lambda d: d.joinpath("latest").write_text(""), "its `latest` file names no tag ('')", 8),
        (lambda d: d.joinpath("latest").unlink(), "it has no `latest` file (the save did not finish, or it was not copied)",
         8),
    ],
    ids=["missing-tag", "missing-shard", "cut-model-states", "binary-latest", "empty-latest", "no-latest"],
)
def test_what_is_missing_and_the_newest_whole_tag_are_one_line(two_tags, damage, missing, newest):
    assert checked_tag(two_tags).name == "global_step8"
    damage(two_tags)
    with pytest.raises(PhiscaleError) as err:
        checked_tag(two_tags)
    assert str(err.value) == f"{two_tags} is an incomplete DeepSpeed checkpoint: {missing}; " + NEWEST_WHOLE.format(
        d=two_tags, step=newest)


def test_zero3_wants_every_rank_s_model_states_and_the_newest_is_by_step(tmp_path):
    ckpt_dir = tmp_path / "ds"
    save_tag(ckpt_dir, "b", 30, ranks=3, zero3=True)
    save_tag(ckpt_dir, "a", 50, ranks=3, zero3=True)
    assert [t.name for t in complete_tags(ckpt_dir)] == ["a", "b"] and checked_tag(ckpt_dir).world_size == 3
    (ckpt_dir / "a" / "zero_pp_rank_2_mp_rank_00_model_states.pt").unlink()
    assert [t.name for t in complete_tags(ckpt_dir)] == ["b"]
    with pytest.raises(PhiscaleError, match=r"tag 'a' lacks zero_pp_rank_2_mp_rank_00_model_states.pt \(written by 3 "
                                            r"data-parallel ranks.*the newest complete tag is 'b' \(step 30\)"):
        checked_tag(ckpt_dir)
    (ckpt_dir / "b" / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(PhiscaleError, match=r"; no other tag in it is complete \(tag 'b' lacks bf16_zero_pp_rank_0_mp_"
                                            r"rank_00_optim_states.pt .*\): pass another checkpoint$"):
        checked_tag(ckpt_dir)


def test_eval_export_and_train_say_it_in_one_line(two_tags, fast_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PHISCALE_TRACEBACK", raising=False)
    (two_tags / "latest").write_text("global_step12")
    expected = (f"{two_tags} is an incomplete DeepSpeed checkpoint: its `latest` names tag 'global_step12', which is "
                "not there (a copy cut short, or a cleanup that went too far); " + NEWEST_WHOLE.format(d=two_tags, step=8))
    for main, argv in ((eval_main, [str(two_tags), "--no-log"]), (export_main, [str(two_tags), str(tmp_path / "x.pt")])):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.splitlines() == [f"{Path(__import__('sys').argv[0]).name}: error: "
                                                                  f"{expected}"], err
    for resume in ("weights", "auto"):  # phiscale-train ckpt_path=DIR (resume=weights): refused before any work
        with pytest.raises(PhiscaleError) as err:
            make_plan(fast_cfg(f"ckpt_path={two_tags}", f"resume={resume}"))
        assert str(err.value) == expected
    assert not (tmp_path / "x.pt").exists()
