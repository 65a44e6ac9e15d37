"""DeepSpeed: the trainer configs build valid ZeRO configs, and ZeRO training + export work on CPU.

Lightning refuses DeepSpeed on CPU, so the training check drives raw `deepspeed.initialize` in two
gloo processes (tests/train/deepspeed_smoke_worker.py); the GPU path runs in benchmarks/gpu_check.py.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch
from support import background

from phiscale.cli.export import main as export_main
from phiscale.config import compose_config
from phiscale.errors import PhiscaleError
from phiscale.paths import cache_dir
from phiscale.train.deepspeed import deepspeed_config, deepspeed_defaults, deepspeed_strategy

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("deepspeed_smoke_worker.py")


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_trainer_group_composes_gpu_then_deepspeed(stage):
    tcfg = compose_config(["trainer=deepspeed", f"trainer.deepspeed.stage={stage}"]).trainer
    assert (tcfg.accelerator, tcfg.strategy, tcfg.precision) == ("gpu", "deepspeed", "bf16-mixed")
    assert tcfg.channels_last is False  # DeepSpeed cannot broadcast channels_last weights
    assert tcfg.deepspeed.stage == stage and "max_epochs" in tcfg  # the rest comes from gpu/cpu


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_trainer_yaml_builds_the_zero_config_for_its_stage(stage):
    tcfg = compose_config(["trainer=deepspeed", f"trainer.deepspeed.stage={stage}"]).trainer
    assert set(tcfg.deepspeed) == set(deepspeed_defaults()), "the defaults have one home: trainer/deepspeed.yaml"
    config = deepspeed_config(tcfg.deepspeed, micro_batch_size=64, grad_accum=2, precision=tcfg.precision)
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["overlap_comm"] and zero["contiguous_gradients"] and zero["reduce_bucket_size"] == 500_000_000
    assert ("allgather_bucket_size" in zero) == (stage < 3)
    assert "offload_optimizer" not in zero and "offload_param" not in zero
    assert config["bf16"] == {"enabled": True} and "fp16" not in config
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]) == (64, 2)
    json.dumps(config)  # DeepSpeed takes it as JSON: plain types only


def test_offloads_go_to_pinned_cpu_memory():
    config = deepspeed_config(
        {"stage": 3, "offload_optimizer": True, "offload_parameters": True, "pin_memory": False},
        micro_batch_size=8,
        grad_clip=1.0,
        precision="32-true",
    )
    zero = config["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert config["gradient_clipping"] == 1.0 and "bf16" not in config


@pytest.mark.parametrize(
    ("ds_cfg", "match"),
    [
        ({"stage": 2, "offload_parameters": True}, r"offload_parameters=true needs ZeRO stage 3"),
        ({"stage": 4}, r"trainer.deepspeed.stage=4 is not a ZeRO stage"),
        ({"stage": 2, "offload": True}, r"unknown trainer.deepspeed key\(s\) \['offload'\]"),
        ({"reduce_bucket_size": 0}, r"trainer.deepspeed.reduce_bucket_size=0"),
    ],
)
def test_bad_deepspeed_settings_name_the_key(ds_cfg, match):
    with pytest.raises(PhiscaleError, match=match):
        deepspeed_config(ds_cfg, micro_batch_size=8)


def test_lightning_strategy_leaves_grad_accumulation_to_the_trainer():
    strategy = deepspeed_strategy(deepspeed_defaults(), micro_batch_size=32, grad_accum=4)
    assert strategy.config["zero_optimization"]["stage"] == 2
    assert strategy.config["train_micro_batch_size_per_gpu"] == 32
    # Lightning refuses this key and sets it from Trainer(accumulate_grad_batches=...).
    assert "gradient_accumulation_steps" not in strategy.config


# ------------------------------------------------------------------ CPU smoke run -----
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ZERO_JOB = "deepspeed-zero"
# Both ranks as one command (the session's background queue runs one command per job): their logs, then
# their exit codes on the last line, and the command fails unless both are 0.
TWO_RANKS = """
for rank in 0 1; do
  RANK=$rank LOCAL_RANK=$rank "$@" >"rank$rank.log" 2>&1 &
done
codes=""
for pid in $(jobs -p); do wait "$pid"; codes="$codes $?"; done
echo "ranks exited:$codes"
[ "$codes" = " 0 0" ]
"""


@background.job(ZERO_JOB)
def two_zero_ranks(dir: Path) -> tuple[list[str], dict[str, str]]:
    """Two gloo ranks train ZeRO 1/2/3 for a few steps and save sharded checkpoints into `dir` (~15 s warm;
    the first run on a machine also compiles DeepSpeed's CPU comm op, ~70 s, into the cache)."""
    env = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    return ["bash", "-c", f"cd {dir} && {TWO_RANKS}", "two-ranks", sys.executable, str(WORKER), str(dir), "1,2,3"], env


@pytest.fixture(scope="module")
def zero_checkpoints(request) -> Path:
    """What the two ranks left: losses.json and the stage1, stage2, stage3 checkpoints."""
    return background.succeeded(request.config, ZERO_JOB, details=rank_logs).dir


def rank_logs(done: background.Finished) -> str:
    logs = (done.dir / f"rank{rank}.log" for rank in (0, 1))
    return "".join(f"{log.name}:\n{log.read_text()[-3000:]}\n" for log in logs if log.exists())


def _worker():
    sys.path.insert(0, str(WORKER.parent))
    try:
        import deepspeed_smoke_worker
    finally:
        sys.path.pop(0)
    return deepspeed_smoke_worker


def _make_net():
    return _worker().make_net()


def _net_loss(state_dict) -> float:
    net = _make_net()
    net.load_state_dict(state_dict)
    x, y = _worker().batch()
    with torch.no_grad():  # train mode: batch statistics, as during the smoke run
        return torch.nn.functional.cross_entropy(net.train()(x), y).item()


@pytest.mark.slow
@pytest.mark.background(ZERO_JOB)  # reads what the two ranks left
def test_zero_stages_train_on_cpu_and_loss_goes_down(zero_checkpoints):
    losses = json.loads((zero_checkpoints / "losses.json").read_text())
    assert set(losses) == {"1", "2", "3"}
    for stage, curve in losses.items():
        assert curve[-1] < 0.8 * curve[0], f"ZeRO stage {stage} did not learn: losses {curve}"
    assert (cache_dir("torch_extensions") / "deepspeed_shm_comm").is_dir(), (
        "the compiled comm op is not cached"
    )


@pytest.mark.slow
@pytest.mark.background(ZERO_JOB)  # reads what the two ranks left
@pytest.mark.parametrize(
    ("stage", "checkpoint"),
    [(1, "stage1"), (2, "stage2"), (2, "stage2/global_step8"), (3, "stage3/last.ckpt")],
    ids=["zero1-raw", "zero2-raw", "zero2-tag-folder", "zero3-lightning-layout"],
)
def test_export_consolidates_shards_into_the_trained_fp32_weights(
    zero_checkpoints, tmp_path, capsys, stage, checkpoint
):
    out = tmp_path / "model.pt"
    export_main([str(zero_checkpoints / checkpoint), str(out)])
    assert "phiscale-export: wrote" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert set(state) == set(_make_net().state_dict()), f"exported keys {sorted(state)}"
    # The merged weights are the trained ones: their loss matches the end of training, not the start.
    curve = json.loads((zero_checkpoints / "losses.json").read_text())[str(stage)]
    assert _net_loss(state) < 0.8 * curve[0], f"exported weights look untrained (stage {stage})"


@pytest.mark.slow
@pytest.mark.background(ZERO_JOB)  # reads what the two ranks left
def test_a_real_zero_checkpoint_cut_short_is_one_line_and_its_whole_tag_exports(zero_checkpoints, tmp_path, capsys,
                                                                                monkeypatch):
    import shutil

    monkeypatch.delenv("PHISCALE_TRACEBACK", raising=False)
    raw, lightning = tmp_path / "stage2", tmp_path / "stage3" / "last.ckpt"
    shutil.copytree(zero_checkpoints / "stage2", raw)
    shutil.copytree(zero_checkpoints / "stage3" / "last.ckpt", lightning)
    (raw / "latest").write_text("global_step12")  # a cleanup that went too far
    (lightning / "checkpoint" / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()  # a copy cut short
    for path, said in (
        (raw, f"{raw} is an incomplete DeepSpeed checkpoint: its `latest` names tag 'global_step12', which is not "
              f"there (a copy cut short, or a cleanup that went too far); the newest complete tag is 'global_step8' "
              f"(step 8): to use it, write its name into {raw}/latest (echo global_step8 > {raw}/latest)"),
        (lightning, f"{lightning} is an incomplete DeepSpeed checkpoint: tag 'checkpoint' lacks bf16_zero_pp_rank_1_"
                    "mp_rank_00_optim_states.pt (written by 2 data-parallel ranks; missing or cut short); no other tag "
                    "in it is complete: pass another checkpoint"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            export_main([str(path), str(tmp_path / "model.pt")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.endswith(f": error: {said}\n") and err.count("\n") == 1, err
    (raw / "latest").write_text("global_step8")  # the fix the line gives
    export_main([str(raw), str(tmp_path / "model.pt")])
    assert set(torch.load(tmp_path / "model.pt", weights_only=True)) == set(_make_net().state_dict())
