"""A DDP checkpoint taken mid-epoch resumes on another number of CPU processes (gloo): 2 -> 1 and
1 -> 2, into the same MLflow run, the rest of that epoch split across the new ranks, no step twice.
(Which samples each rank reads is checked at the data level: tests/train/test_datamodule.py.)"""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from mlflow.tracking import MlflowClient
from support.runs import FAST, TRAIN

pytestmark = pytest.mark.slow

DIGITS_TRAIN, BATCH = 1438, 32  # the embedded digits' train set, data.batch_size of FAST
STOP = 10  # optimizer steps of the first attempt: mid-epoch 0 at either world size


def train(args: list[str], world: int) -> subprocess.CompletedProcess:
    layout = ["trainer=ddp", f"trainer.devices={world}"] if world > 1 else []
    result = subprocess.run([TRAIN, *args, *layout], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)], ids=["2->1", "1->2"])
def test_a_mid_epoch_checkpoint_resumes_on_another_number_of_ranks(tmp_path, before, after):
    out = tmp_path / "run"
    args = [*FAST, "trainer.limit_train_batches=1.0", "trainer.ckpt_every_n_steps=5", "trainer.log_every_n_steps=1",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"paths.output_dir={out}", "run_name=reshard"]
    train([*args, f"trainer.max_steps={STOP}"], before)  # stops mid-epoch 0, last.ckpt at step 10
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STOP
    (loader_state,) = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state["samples_done"] == STOP * before * BATCH, "the checkpoint says how far the epoch got"

    result = train(args, after)  # the same run, trainer.max_epochs=2, on `after` ranks
    assert "resuming" in result.stdout

    per_step = after * BATCH  # samples one step of every rank reads now
    rest_of_epoch = (DIGITS_TRAIN - STOP * before * BATCH) // per_step
    steps = STOP + rest_of_epoch + DIGITS_TRAIN // per_step

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("phiscale").experiment_id])
    assert run.info.status == "FINISHED"
    losses = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(losses) == len(set(losses)), "a step was logged twice"
    assert sorted(losses) == list(range(steps)), "the resumed epoch read the rest of its samples, then one whole epoch"
    assert json.loads((out / "summary.json").read_text())["global_step"] == steps
    assert len(client.get_metric_history(run.info.run_id, "val/top1")) == 2, "one validation per epoch"
