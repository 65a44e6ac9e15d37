"""The run plan: every refusal of a bad config before any work, and what a good config resolves to."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from phiscale.config import compose_config, conf_dir
from phiscale.errors import PhiscaleError
from phiscale.train.plan import LAST, SUMMARY, dataset_resolution, finished_summary, make_plan, model_kwargs


def efficientnet_cfg(fast_overrides: list[str], *extra: str):
    """The FAST config with model=efficientnet instead of its MobileNet (whose knobs efficientnet refuses)."""
    return compose_config([*(o for o in fast_overrides if not o.startswith("model")), "model=efficientnet", *extra])


def refuse(cfg, match: str) -> str:
    """make_plan(cfg) must raise one PhiscaleError line matching `match`; returns the line."""
    with pytest.raises(PhiscaleError, match=match) as err:
        make_plan(cfg)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("trainer.max_epochs=-3", r"trainer.max_epochs=-3 must be an integer >= -1 \(-1 for no epoch limit"),
        ("trainer.max_steps=-2", r"trainer.max_steps=-2 must be an integer >= -1"),
        ("trainer.log_every_n_steps=0", r"trainer.log_every_n_steps=0 must be an integer >= 1"),
        ("trainer.ckpt_every_n_steps=0", r"trainer.ckpt_every_n_steps=0 must be an integer >= 1"),
        ("trainer.accumulate_grad_batches=0", r"trainer.accumulate_grad_batches=0 must be an integer >= 1"),
        ("trainer.max_epochs=1.5", r"trainer.max_epochs=1.5 must be an integer"),
        ("trainer.max_epochs=true", r"trainer.max_epochs=True must be an integer"),
    ],
)
def test_bad_trainer_counts_are_refused_before_any_work(fast_cfg, tmp_path, override, match):
    refuse(fast_cfg(override), match)
    assert not (tmp_path / "outputs").exists(), "a refused config must not create its output dir"


def test_no_stopping_point_at_all_is_refused(fast_cfg):
    refuse(fast_cfg("trainer.max_epochs=-1", "trainer.max_steps=-1"), "would train forever; set one of them")
    assert make_plan(fast_cfg("trainer.max_epochs=-1", "trainer.max_steps=5")).run_name  # a step limit is enough


def test_more_cpu_processes_than_cores_names_the_core_count(fast_cfg):
    cores = os.cpu_count()
    refuse(fast_cfg("trainer=ddp", "trainer.devices=512"),
           rf"trainer.devices=512 CPU processes but this node has {cores} cores; set trainer.devices<={cores}")


@pytest.mark.parametrize("override", ["trainer.devices=0", "trainer.num_nodes=0"])
def test_zero_devices_or_nodes_are_refused(fast_cfg, override):
    refuse(fast_cfg(override), "both must be >= 1")


def test_devices_that_are_not_a_count_are_refused(fast_cfg):
    refuse(fast_cfg("trainer.devices=many"), "trainer.devices='many' is not a device count")


def test_deepspeed_on_cpu_is_refused(fast_cfg):
    refuse(fast_cfg("trainer=deepspeed", "trainer.accelerator=cpu"),
           "trainer.strategy=deepspeed with trainer.accelerator=cpu: Lightning runs DeepSpeed on CUDA GPUs only")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_without_cuda_is_refused(fast_cfg):
    refuse(fast_cfg("trainer=gpu"), "trainer.accelerator=gpu but no CUDA device is visible; use trainer=cpu")


@pytest.mark.parametrize("key", ["train_resolution", "eval_resolution"])
def test_a_resolution_below_the_total_stride_is_refused(fast_cfg, key):
    refuse(fast_cfg(f"{key}=16"), rf"{key}=16 is below mobilenet_v3_small's total stride 32; use {key}>=32")


def test_budget_on_a_model_outside_the_phi_family_is_refused(fast_cfg):
    refuse(fast_cfg("budget.macs=1e9"), "budget.* needs model=efficientnet .*not model=mobilenet_v3_small")


def test_budget_from_another_base_network_is_refused(fast_overrides):
    refuse(efficientnet_cfg(fast_overrides, "budget.macs=1e9", "model.depth_mult=2"),
           r"budget.\* searches φ from B0 and model.width_mult/depth_mult/resolution_mult=\[None, 2, None\]")


def test_budget_sets_phi_and_the_tags(fast_overrides):
    from phiscale.models.budget import phi_for_budget

    plan = make_plan(efficientnet_cfg(fast_overrides, "budget.params=8e6"))
    expected = phi_for_budget("efficientnet", max_params=8e6, num_classes=10)
    assert plan.scale.phi == pytest.approx(expected) and plan.run_name == f"efficientnet-phi{expected:g}"
    assert plan.tags == {"budget_params": "8e+06", "budget_phi": f"{expected:g}"}


def test_resume_never_refuses_an_existing_last_checkpoint(fast_cfg):
    plan = make_plan(fast_cfg())
    assert plan.resume_from is None
    plan.ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 3}, plan.ckpt_dir / LAST)
    assert make_plan(fast_cfg()).resume_from == plan.ckpt_dir / LAST  # resume=auto continues it
    refuse(fast_cfg("resume=never"), f"{plan.ckpt_dir / LAST} exists and resume=never; use resume=auto")


def test_an_unknown_resume_mode_lists_the_modes(fast_cfg):
    refuse(fast_cfg("resume=sometimes"), "resume='sometimes' is not one of: auto, never")


def test_ckpt_path_must_exist_and_wins_over_last_checkpoint(fast_cfg, tmp_path):
    refuse(fast_cfg(f"ckpt_path={tmp_path}/nope.ckpt"), rf"ckpt_path={tmp_path}/nope.ckpt does not exist")
    given = tmp_path / "given.ckpt"
    given.write_bytes(b"not a checkpoint")
    refuse(fast_cfg(f"ckpt_path={given}"), rf"ckpt_path={given} is not a readable checkpoint \(.*\); give an intact")
    torch.save({"state_dict": {}, "global_step": 7}, given)
    plan = make_plan(fast_cfg())
    plan.ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 9}, plan.ckpt_dir / LAST)
    chosen = make_plan(fast_cfg(f"ckpt_path={given}"))
    assert (chosen.resume_from, chosen.resume_step) == (given, 7)


def test_efficientnet_phi1_on_digits_trains_at_37_px_under_its_run_name(fast_overrides, tmp_path):
    plan = make_plan(efficientnet_cfg(fast_overrides, "model.phi=1"))
    assert plan.scale.resolution == 258  # round(224 * 1.15)
    assert (plan.train_resolution, plan.eval_resolution) == (37, 37)  # round(258 * 32 / 224) = round(36.86)
    assert plan.run_name == "efficientnet-phi1"
    assert plan.output_dir == tmp_path / "outputs" / "runs" / "phiscale" / "efficientnet-phi1"
    assert plan.ckpt_dir == plan.output_dir / "checkpoints" and plan.output_dir.is_dir()
    assert (plan.accelerator, plan.devices, plan.world_size, plan.precision) == ("cpu", 1, 1, "32-true")


def test_the_fast_config_plan(fast_cfg, tmp_path):
    plan = make_plan(fast_cfg("eval_resolution=48", "trainer.accumulate_grad_batches=4", "bn_momentum=0.1"))
    assert plan.run_name == "mobilenet_v3_small-w0.5"
    assert (plan.train_resolution, plan.eval_resolution) == (32, 48)  # 224 native * 32 / 224, then as given
    assert plan.global_batch_size == 32 * 4  # per-device batch x devices x nodes x accumulation
    # null knobs are left to the model; data=digits brings its recipe's (conf/recipe/digits.yaml)
    digits_recipe = OmegaConf.to_container(OmegaConf.load(conf_dir() / "recipe" / "digits.yaml").model)
    assert plan.model_kwargs == {"width_mult": 0.5, **digits_recipe, "bn_momentum": 0.1}
    assert plan.scale.bn_momentum == 0.1 and plan.num_classes == 10 and plan.seed == 0
    assert json.loads(json.dumps(plan.to_json()))["output_dir"] == str(plan.output_dir)


def test_run_name_and_output_dir_overrides(fast_cfg, tmp_path):
    assert make_plan(fast_cfg("run_name=mine")).output_dir == tmp_path / "outputs" / "runs" / "phiscale" / "mine"
    plan = make_plan(fast_cfg(f"paths.output_dir={tmp_path}/elsewhere/../here"))
    assert plan.output_dir == tmp_path / "here" and plan.run_name == "mobilenet_v3_small-w0.5"


def test_ddp_on_cpu_counts_every_process_in_the_global_batch(fast_cfg):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 cores for trainer.devices=2 on CPU")
    plan = make_plan(fast_cfg("trainer=ddp", "trainer.accelerator=cpu"))
    assert (plan.devices, plan.world_size, plan.global_batch_size) == (2, 2, 64)


def test_model_kwargs_and_dataset_resolution():
    assert model_kwargs({"name": "efficientnet", "phi": 1.0, "dropout": None, "resolution": None}) == {"phi": 1.0}
    assert dataset_resolution(224, 32) == 32 and dataset_resolution(600, 32) == 86  # B7 on digits
    assert dataset_resolution(224, 224) == 224


def write_summary(plan, **fields) -> Path:
    content = {"status": "finished", "max_epochs": 2, "max_steps": -1, "run_id": "abc"} | fields
    (plan.output_dir / SUMMARY).write_text(json.dumps(content))
    return plan.output_dir / SUMMARY


def test_finished_summary_only_for_a_resumed_run_that_finished_with_the_same_stopping_point(fast_cfg):
    cfg = fast_cfg()
    plan = make_plan(cfg)
    write_summary(plan)
    assert finished_summary(plan, cfg) is None, "no last.ckpt: nothing to resume, so nothing finished"
    plan.ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 12}, plan.ckpt_dir / LAST)
    plan = make_plan(cfg)
    assert finished_summary(plan, cfg)["run_id"] == "abc"
    assert finished_summary(plan, fast_cfg("trainer.max_epochs=3")) is None, "a later end continues the run"
    write_summary(plan, status="interrupted")
    assert finished_summary(plan, cfg) is None


def test_augmentation_settings_are_checked_and_switch_the_loader_to_uint8(fast_cfg):
    refuse(fast_cfg("aug=randaugment", "aug.magnitude=20"), r"aug.magnitude=20 must be in \[0, 10\]")
    refuse(fast_cfg("aug.mixup=-1"), "aug.mixup=-1")
    assert make_plan(fast_cfg()).augment is False
    assert make_plan(fast_cfg("aug=randaugment")).augment is True
    assert make_plan(fast_cfg("aug.mixup=0.2")).augment is True


# (affinity, OMP_NUM_THREADS, SLURM_CPUS_PER_TASK, processes sharing the affinity, accelerator, data.num_workers)
#   -> (CPUs, torch threads, loader workers): torch and the loader together never exceed the process's CPUs.
SIZING = [
    ((2, None, None, 1, "cpu", "auto"), (2, 1, 1)),     # the 2-core demo: not 2 torch threads beside the loader
    ((1, None, None, 1, "cpu", "auto"), (1, 1, 1)),
    ((4, None, None, 1, "cpu", "auto"), (4, 3, 1)),
    ((16, None, None, 1, "cpu", "auto"), (16, 12, 4)),  # a quarter decodes
    ((64, None, None, 1, "cpu", "auto"), (64, 48, 16)),
    ((2, "1", None, 1, "cpu", "auto"), (1, 1, 1)),      # OMP_NUM_THREADS=1: one CPU for this process
    ((16, "8", None, 1, "cpu", "auto"), (8, 6, 2)),
    ((16, "4,2", None, 1, "cpu", "auto"), (4, 3, 1)),   # a nested OMP list: its first level
    ((16, "32", None, 1, "cpu", "auto"), (16, 12, 4)),  # more than the affinity allows: the affinity
    ((64, None, "8", 1, "cpu", "auto"), (8, 6, 2)),     # SLURM --cpus-per-task on an unbound node
    ((64, "8", "8", 1, "gpu", "auto"), (8, 1, 7)),      # slurm/*.sbatch sets both; a GPU task decodes on 7
    ((16, "4", "8", 1, "cpu", "auto"), (4, 3, 1)),      # the smallest bound wins
    ((16, None, None, 2, "cpu", "auto"), (8, 6, 2)),    # CPU DDP: 2 processes share the affinity
    ((2, None, None, 2, "cpu", "auto"), (1, 1, 1)),
    ((64, None, None, 8, "gpu", "auto"), (8, 1, 7)),    # 8 GPUs started by Lightning on a 64-core node
    ((2, None, None, 1, "gpu", "auto"), (2, 1, 1)),
    ((2, None, None, 1, "cpu", 2), (2, 1, 2)),          # the user's count stands; torch keeps one thread
    ((16, None, None, 1, "cpu", 0), (16, 16, 0)),       # torch loader in-process: compute and decode take turns
    ((16, None, None, 1, "cpu", 6), (16, 10, 6)),
]


@pytest.mark.parametrize(("given", "expected"), SIZING)
def test_torch_threads_and_loader_workers_are_sized_together_from_the_task(given, expected):
    from phiscale.train.plan import size_threads

    affinity, omp, slurm, processes, accelerator, workers = given
    sized = size_threads(affinity, omp_num_threads=omp, slurm_cpus_per_task=slurm, processes=processes,
                         accelerator=accelerator, loader_workers=workers)
    assert (sized.cpus, sized.torch_threads, sized.loader_workers) == expected, sized


def test_the_thread_sizing_says_what_bounded_the_cpus():
    from phiscale.train.plan import size_threads

    assert size_threads(2).bound_by == "CPU affinity 2 / 1 process(es)"
    assert size_threads(2, omp_num_threads="1").bound_by == "OMP_NUM_THREADS=1"
    assert size_threads(64, slurm_cpus_per_task="8").describe() == (
        "8 CPU(s) (SLURM_CPUS_PER_TASK=8): 6 torch thread(s), 2 loader worker(s)")


@pytest.mark.parametrize(("given", "message"), [
    (dict(omp_num_threads="0"), "OMP_NUM_THREADS='0' is not a positive thread count; unset it"),
    (dict(omp_num_threads="four"), "OMP_NUM_THREADS='four' is not a positive thread count"),
    (dict(slurm_cpus_per_task="-2"), "SLURM_CPUS_PER_TASK='-2' is not a positive thread count"),
    (dict(loader_workers=-1), r"data.num_workers=-1 must be auto or an integer >= 0"),
    (dict(loader_workers="many"), r"data.num_workers='many' must be auto or an integer >= 0"),
    (dict(accelerator="tpu"), "no thread sizing for accelerator 'tpu'"),
])
def test_bad_thread_settings_are_refused_naming_the_value(given, message):
    from phiscale.train.plan import size_threads

    with pytest.raises(PhiscaleError, match=message):
        size_threads(2, **given)


def test_the_plan_sizes_threads_from_this_process_not_from_what_ran_before(fast_cfg, monkeypatch):
    from phiscale.train.plan import size_threads, torch_threads

    for name in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    affinity = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(7)  # what an earlier in-process run may have left
        cfg = fast_cfg("data.num_workers=auto")
        plan = make_plan(cfg)
    finally:
        torch.set_num_threads(before)
    assert plan.threads == size_threads(affinity)
    assert torch_threads(plan) == plan.threads.torch_threads
    assert cfg.data.num_workers == plan.threads.loader_workers, "the loader gets the sized workers"
    ddp = make_plan(fast_cfg("trainer.devices=2", "trainer.strategy=ddp", "data.num_workers=auto"))
    assert ddp.threads == size_threads(affinity, processes=2), "CPU DDP ranks share this process's CPUs"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert make_plan(fast_cfg()).threads == size_threads(affinity, omp_num_threads="1", loader_workers=1)


def test_a_slurm_task_sizes_from_its_own_cpus(fast_cfg, monkeypatch):
    from phiscale.train.plan import plan_threads

    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "phiscale-train", "SLURM_NTASKS": "2", "SLURM_CPUS_PER_TASK": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    sized = plan_threads("cpu", 2, "auto")  # srun started this task: its CPUs are its own, not shared by 2
    assert (sized.cpus, sized.bound_by) == (1, "SLURM_CPUS_PER_TASK=1")
