"""Checkpoints that survive a kill mid-write, and a restart that resumes from the newest intact one.

The end-to-end tests run real `phiscale-train` processes on the digits: a last.ckpt truncated to a
third (what a kill during the old copy-from-/tmp left), and SIGKILL while a checkpoint is being
written with TMPDIR on another file system (a tmpfs), as on a cluster.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from support.runs import TRAIN, Training, wait_for

from phiscale.errors import PhiscaleError
from phiscale.train.checkpoint_io import (
    checkpoint_step,
    choose_resume,
    keep_latest,
    kept_steps,
    refuse_unresumable,
    remove_stale_temps,
    set_aside,
    temp_path,
    write_checkpoint,
)


def test_a_failed_write_leaves_the_previous_checkpoint_whole_and_no_temporary(tmp_path):
    target = tmp_path / "last.ckpt"
    write_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 4}, target)
    assert checkpoint_step(target) == 4 and not temp_path(target).exists()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full, say")

    with pytest.raises(RuntimeError, match="disk full"):
        write_checkpoint({"state_dict": {}, "global_step": 8, "bad": Unpicklable()}, target)
    assert checkpoint_step(target) == 4, "the previous last.ckpt must survive a write that did not complete"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "the temporary file must be removed"


def test_the_newest_intact_checkpoint_is_chosen_and_the_unreadable_named(tmp_path):
    last, best = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "global_step": 30}, last)
    torch.save({"state_dict": {}, "global_step": 20}, best)
    assert choose_resume([last, best]).path == last
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    choice = choose_resume([last, best])
    assert (choice.path, choice.step) == (best, 20)
    assert [p for p, _ in choice.unreadable] == [last]

    moved = set_aside(choice.unreadable, choice.path)
    assert not last.exists() and len(moved) == 1 and moved[0].name.startswith("last.ckpt.unreadable-")
    assert choose_resume([last, best]).unreadable == (), "what was set aside is never read again"

    best.write_bytes(b"")
    torch.save({"weights": 1}, last)  # a torch file, but not a Lightning checkpoint
    nothing = choose_resume([last, best])
    assert nothing.path is None and len(nothing.unreadable) == 2
    with pytest.raises(PhiscaleError, match=r"cannot resume .*: no intact checkpoint \(last.ckpt \(ValueError: not a "
                                            r"Lightning checkpoint.*best.ckpt \(empty file\)\); start a new run") as err:
        refuse_unresumable(nothing, tmp_path)
    assert "\n" not in str(err.value)


def test_keep_latest_k_keeps_each_kept_step_s_own_bytes_and_the_resume_takes_the_newest_intact(tmp_path):
    last = tmp_path / "last.ckpt"
    for step in (4, 8, 12):
        write_checkpoint({"state_dict": {"w": torch.full((2,), float(step))}, "global_step": step}, last)
        keep_latest(last, step, k=2)
    kept = kept_steps(tmp_path)
    assert [p.name for p in kept] == ["step-00000008.ckpt", "step-00000012.ckpt"], "only the 2 latest are kept"
    assert [checkpoint_step(p) for p in kept] == [8, 12], "a kept step must keep its own checkpoint"
    last.write_bytes(last.read_bytes()[:100])
    kept[1].write_bytes(b"")
    assert choose_resume([last, tmp_path / "best.ckpt", *reversed(kept)]).path == kept[0]


def test_a_deepspeed_checkpoint_of_another_world_size_is_refused_before_the_run_opens(fast_cfg, tmp_path):
    from phiscale.train.plan import make_plan

    # The layout and key DeepSpeed writes (engine._save_checkpoint: `latest`, <tag>/mp_rank_00_model_states.pt
    # with dp_world_size, a ZeRO optimizer shard per rank); a real one needs a GPU (benchmarks/gpu_session.sh
    # covers DeepSpeed itself).
    ds = tmp_path / "ds" / "last.ckpt"
    (ds / "checkpoint").mkdir(parents=True)
    (ds / "latest").write_text("checkpoint")
    torch.save({"module": None, "dp_world_size": 2}, ds / "checkpoint" / "mp_rank_00_model_states.pt")
    for rank in (0, 1):
        torch.save({}, ds / "checkpoint" / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    with pytest.raises(PhiscaleError, match=r"is a DeepSpeed checkpoint of 2 data-parallel ranks and this run has 1: "
                                            r"DeepSpeed cannot reshard.*add resume=weights") as err:
        make_plan(fast_cfg(f"ckpt_path={ds}"))
    assert "\n" not in str(err.value)

    # resume=weights takes its (consolidated) weights alone: no refusal, steps continue after its own.
    torch.save({"module": None, "dp_world_size": 2, "global_step": 40}, ds / "checkpoint" / "mp_rank_00_model_states.pt")
    plan = make_plan(fast_cfg(f"ckpt_path={ds}", "resume=weights"))
    assert (plan.weights_from, plan.resume_from, plan.resume_step) == (ds, None, 40)


def test_a_file_checkpoint_onto_an_earlier_stages_deepspeed_directory_keeps_that_directory(tmp_path):
    from phiscale.train.checkpoint_io import write_checkpoint

    ds = tmp_path / "last.ckpt"
    (ds / "checkpoint").mkdir(parents=True)
    (ds / "latest").write_text("checkpoint")
    write_checkpoint({"state_dict": {}, "global_step": 3}, ds)
    assert checkpoint_step(ds) == 3
    (aside,) = tmp_path.glob("last.ckpt.deepspeed-*")
    assert (aside / "latest").read_text() == "checkpoint"


def test_resume_weights_starts_once_then_a_restart_of_that_stage_resumes_in_full(fast_cfg, tmp_path):
    from phiscale.train.checkpoint_io import mark_weights_start
    from phiscale.train.plan import make_plan

    plan = make_plan(fast_cfg(f"paths.output_dir={tmp_path}/run"))
    with pytest.raises(PhiscaleError, match="resume=weights but .* holds no checkpoint; give ckpt_path="):
        make_plan(fast_cfg(f"paths.output_dir={tmp_path}/run", "resume=weights"))
    last = plan.ckpt_dir / "last.ckpt"
    last.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 12}, last)
    plan = make_plan(fast_cfg(f"paths.output_dir={tmp_path}/run", "resume=weights"))
    assert (plan.weights_from, plan.resume_from, plan.resume_step) == (last, None, 12)
    mark_weights_start(plan.ckpt_dir, last, 12)  # the stage began; it then writes its own last.ckpt
    torch.save({"state_dict": {}, "global_step": 16}, last)
    plan = make_plan(fast_cfg(f"paths.output_dir={tmp_path}/run", "resume=weights"))  # a requeue: same command
    assert (plan.weights_from, plan.resume_from, plan.resume_step) == (None, last, 16)


def test_only_the_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".last.ckpt.{int(dead.stdout)}.tmp"
    mine = temp_path(tmp_path / "last.ckpt")
    for path in (stale, mine):
        path.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == [stale] and mine.exists()


# ---------------------------------------------------------------- end to end -----
def run_train(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TRAIN, *args], capture_output=True, text=True, timeout=600, env=env)


def the_one_run(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    assert len(runs) == 1, f"expected one MLflow run, got {[r.info.run_name for r in runs]}"
    return client, runs[0]


def assert_each_step_once(client, run_id: str, epochs: int) -> None:
    for key in ("train/loss", "train/lr", "val/top1", "val/top1_best"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert steps == sorted(set(steps)), f"{key} steps repeat or go back: {steps}"
    assert len(client.get_metric_history(run_id, "val/top1")) == epochs, "one val/top1 per epoch"


@pytest.mark.slow
def test_a_truncated_last_checkpoint_is_set_aside_and_the_run_continues_from_the_best(fast_overrides, tmp_path):
    args = [*fast_overrides, "run_name=truncated"]
    out = tmp_path / "outputs" / "runs" / "phiscale" / "truncated"
    last, best = out / "checkpoints" / "last.ckpt", out / "checkpoints" / "best.ckpt"
    first = run_train([*args, "trainer.max_epochs=2"])
    assert first.returncode == 0, first.stderr[-3000:]
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])

    again = run_train([*args, "trainer.max_epochs=3"])
    assert again.returncode == 0, again.stderr[-3000:]
    said = [line for line in (again.stdout + again.stderr).splitlines() if "is unreadable" in line]
    assert len(said) == 1 and f"resuming from {best}" in said[0], said
    assert checkpoint_step(last) == 18, "the resumed run wrote a whole last.ckpt at its end (3 epochs x 6 steps)"
    client, run = the_one_run(tmp_path)
    assert run.info.status == "FINISHED"
    assert_each_step_once(client, run.info.run_id, epochs=3)

    # Nothing intact left: refused in one line, and neither the run's status nor summary.json changes.
    summary = (out / "summary.json").read_bytes()
    for path in (last, best):
        path.write_bytes(path.read_bytes()[:1000])
    refused = run_train([*args, "trainer.max_epochs=4"])
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "no intact checkpoint" in lines[0] and "paths.output_dir" in lines[0], lines
    assert (out / "summary.json").read_bytes() == summary, "a refused start rewrote summary.json"
    after = client.get_run(run.info.run_id)
    assert (after.info.status, after.info.end_time) == ("FINISHED", run.info.end_time)
    assert last.exists() and best.exists(), "a refused start leaves the checkpoints where they were"


@pytest.mark.slow
def test_resume_weights_continues_the_same_run_with_a_fresh_optimizer(fast_overrides, tmp_path):
    args = [*fast_overrides, "run_name=weights", "trainer.log_every_n_steps=1"]
    out = tmp_path / "outputs" / "runs" / "phiscale" / "weights"
    last = out / "checkpoints" / "last.ckpt"
    first = run_train(args)
    assert first.returncode == 0, first.stderr[-3000:]
    trained = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    from phiscale.config import compose_config
    from phiscale.models import build_model
    from phiscale.train.plan import make_plan
    from phiscale.train.run import _start_from_weights

    plan = make_plan(compose_config([*args, "resume=weights"]))
    model = build_model("mobilenet_v3_small", plan.num_classes, **plan.model_kwargs)
    _start_from_weights(plan, model, rank=1)  # what each rank does first (rank 0 also marks the stage's start)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, trained[f"model.{name}"]), f"{name} is not the checkpoint's"

    again = run_train([*args, "resume=weights"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"from the weights of {last} (step 12) with a fresh optimizer" in again.stdout
    client, run = the_one_run(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.data.tags["phiscale.resumed_from"] == f"weights:{last}"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(24)), "the second stage's steps follow the first's: 12 more, none twice"
    assert_each_step_once(client, run.info.run_id, epochs=4)
    assert json.loads((out / "summary.json").read_text())["global_step"] == 24
    lr = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/lr")}
    assert lr[12] == pytest.approx(lr[0]), "a fresh optimizer: its schedule starts again"
    best = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val/top1_best"), key=lambda m: m.step)]
    assert best == sorted(best), "the run's best carries over: val/top1_best never drops"


@pytest.fixture
def tmpdir_on_tmpfs(tmp_path):
    """TMPDIR on a file system of its own (a tmpfs), as node-local /tmp is on a cluster."""
    mount = tmp_path / "node-tmp"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("needs root to mount a tmpfs (TMPDIR on another file system)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written_never_loses_the_run(fast_overrides, tmp_path, tmpdir_on_tmpfs):
    # efficientnet_b2 with momentum and EMA: about 110 MB a checkpoint, written every step.
    args = [*(o for o in fast_overrides if not o.startswith("model")), "model=efficientnet_b2", "run_name=kill",
            "trainer.ckpt_every_n_steps=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
            "trainer.max_epochs=2", "data.batch_size=16", "optim.ema_decay=0.99"]
    ckpt_dir = tmp_path / "outputs" / "runs" / "phiscale" / "kill" / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    env = dict(os.environ, TMPDIR=str(tmpdir_on_tmpfs))
    assert os.stat(tmpdir_on_tmpfs).st_dev != os.stat(tmp_path).st_dev
    rng = random.Random(20)
    for attempt in range(2):
        training = Training(args, tmp_path / f"attempt{attempt}.log", env)
        pid = training.process.pid
        temp = ckpt_dir / f".last.ckpt.{pid}.tmp"
        if attempt == 0:  # a whole one first, to know how large a checkpoint is
            wait_for(lambda: last.exists(), 300, "the first last.ckpt", training)
        size = last.stat().st_size
        fraction = rng.uniform(0.05, 0.95)  # a random moment of the write
        wait_for(lambda t=temp, at=fraction * size: t.exists() and t.stat().st_size >= at, 300,
                 f"{temp.name} {fraction:.0%} written", training)
        training.kill()
        assert checkpoint_step(last) >= 0, f"attempt {attempt}: last.ckpt unreadable after a kill mid-write"
        assert not [p for p in Path(tmpdir_on_tmpfs).rglob("*") if p.is_file() and p.stat().st_size > 2**20], \
            "a checkpoint went through TMPDIR"
    final = Training(args, tmp_path / "final.log", env)
    assert final.wait(600) == 0, final.output()[-3000:]
    assert not list(ckpt_dir.glob(".*.tmp")), "the killed attempts' temporaries were not cleaned up"
    assert not list(ckpt_dir.glob("*.unreadable-*")), "an atomic write never leaves an unreadable checkpoint"
    client, run = the_one_run(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["restarts"] == "2"
    assert_each_step_once(client, run.info.run_id, epochs=2)

