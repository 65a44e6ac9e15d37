"""Same seed, same run: two trainings of one config log identical histories (FFCV and torch loaders),
another seed does not, and a run SIGKILLed after a checkpoint and resumed logs what the
uninterrupted run logged."""

from __future__ import annotations

import signal
import subprocess

import pytest
import torch
from support.runs import FAST, TRAIN, metric_points, wait_for

from phiscale.config import compose_config
from phiscale.tracking.journal import read_entries, tracking_dir
from phiscale.train.run import run_training

pytestmark = pytest.mark.slow

EVERY_STEP = [*FAST, "trainer.log_every_n_steps=1", "trainer.max_epochs=3", "optim.ema_decay=0.99",
              "model.dropout=0.2"]  # dropout and EMA: more RNG the run must replay


def history(output_dir) -> dict[str, list[tuple[int, float]]]:
    """Every (step, value) the run journaled for train/loss and val/top1."""
    entries, _ = read_entries(tracking_dir(output_dir) / "journal.jsonl")
    found: dict[str, list[tuple[int, float]]] = {"train/loss": [], "val/top1": []}
    for entry in entries:
        if entry["op"] == "metrics":
            for key, value, _, step in entry["values"]:
                if key in found:
                    found[key].append((step, value))
    return {k: sorted(v) for k, v in found.items()}


def train(tmp_path, name: str, *extra: str) -> dict:
    out = tmp_path / name
    run_training(compose_config([*EVERY_STEP, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                                 f"paths.output_dir={out}", f"run_name={name}", *extra]))
    return history(out)


@pytest.mark.parametrize("loader", ["ffcv", "torch"])
def test_the_same_seed_gives_the_same_history_and_another_seed_does_not(tmp_path, loader):
    first = train(tmp_path, "a", f"data.loader={loader}", "data.num_workers=2")
    again = train(tmp_path, "b", f"data.loader={loader}", "data.num_workers=2")
    other = train(tmp_path, "c", f"data.loader={loader}", "data.num_workers=2", "seed=1")
    assert len(first["train/loss"]) == 18 and len(first["val/top1"]) == 3
    assert first == again, "two runs with seed=0 logged different numbers"
    assert first["train/loss"] != other["train/loss"], "seed=1 logged the same losses as seed=0"


AUGMENTED = ["aug=randaugment", "aug.mixup=0.2", "aug.erasing=0.25"]  # the augmentation's streams resume too


def test_a_resumed_run_logs_what_the_uninterrupted_run_logged(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as an earlier in-process run may leave it: the run sets its own count
    try:
        uninterrupted = train(tmp_path, "whole", *AUGMENTED)  # in this process; the killed run is a new one
    finally:
        torch.set_num_threads(threads)

    out = tmp_path / "killed"
    args = [*EVERY_STEP, *AUGMENTED, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"paths.output_dir={out}",
            "run_name=killed"]
    proc = subprocess.Popen([TRAIN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / "last.ckpt"
    try:
        wait_for(ckpt.exists, 300, f"{ckpt}")
        ckpt_step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
        wait_for(lambda: any(step > ckpt_step for step, _ in metric_points(out)), 300, "steps past the checkpoint")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the first attempt ended before it could be killed"
    assert 0 < ckpt_step < 18, "the kill landed mid-run"

    run_training(compose_config(args))  # the same command again: resume from last.ckpt
    assert history(out) == uninterrupted, "the resumed run's numbers differ from the uninterrupted run's"
