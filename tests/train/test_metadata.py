"""What a run tells MLflow about itself: scale tags, model size, the best-checkpoint rule,
the summary and the one-line description."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from phiscale.config import compose_config
from phiscale.models import build_model, resolve_scale
from phiscale.models.profile import count_macs, count_params
from phiscale.train.metadata import (
    best_checkpoint_artifact,
    class_names,
    describe,
    profile_metrics,
    scale_tags,
    summary,
    write_summary,
)
from phiscale.train.plan import finished_summary, make_plan


def test_scale_tags_of_the_phi_family_carry_the_coefficients():
    tags = scale_tags(resolve_scale("efficientnet", phi=1.5))
    assert tags["model"] == tags["family"] == "efficientnet"
    assert (tags["phi"], tags["alpha"], tags["beta"], tags["gamma"]) == ("1.5", "1.2", "1.1", "1.15")
    assert tags["width_mult"] == f"{1.1 ** 1.5:g}" and tags["resolution"] == "276"  # round(224 * 1.15^1.5) = round(276.2)


def test_scale_tags_of_a_mobilenet_leave_out_what_it_does_not_have():
    tags = scale_tags(resolve_scale("mobilenet_v2", width_mult=0.5))
    assert tags == {"model": "mobilenet_v2", "family": "mobilenet_v2", "width_mult": "0.5", "depth_mult": "1",
                    "resolution_mult": "1", "resolution": "224"}


def test_profile_metrics_of_a_small_model_at_train_and_eval_resolution(fast_cfg):
    plan = make_plan(fast_cfg("eval_resolution=64"))
    model = build_model("mobilenet_v3_small", 10, width_mult=0.5)
    metrics = profile_metrics(model, plan)
    assert model.training, "profiling must leave the model in training mode"
    assert metrics["model/params"] == count_params(model)
    assert metrics["model/macs_train"] == count_macs(model, 32)
    assert metrics["model/macs_eval"] == count_macs(model, 64) > metrics["model/macs_train"]
    assert metrics["model/flops_train"] == 2 * metrics["model/macs_train"]
    assert metrics["model/flops_eval"] == 2 * metrics["model/macs_eval"]
    assert metrics["model/activation_mb"] > 0
    assert (metrics["train/resolution"], metrics["eval/resolution"]) == (32.0, 64.0)


@pytest.fixture
def tracking():
    """The tracking config group, as a run reads it."""
    return compose_config([]).tracking


def test_best_checkpoint_uploaded_when_small_else_its_path(tmp_path, tracking):
    best = tmp_path / "best.ckpt"
    best.write_bytes(b"\0" * 2**20)  # 1 MiB
    assert best_checkpoint_artifact(str(best), tracking) == best
    tracking.max_checkpoint_mb = 0.5
    note = best_checkpoint_artifact(str(best), tracking)
    assert note == tmp_path / "best_path.txt" and note.read_text() == f"{best.resolve()}\n"


def test_best_checkpoint_path_only_when_asked_or_a_directory(tmp_path, tracking):
    sharded = tmp_path / "best.ckpt"
    sharded.mkdir()  # DeepSpeed writes a directory of shards
    assert best_checkpoint_artifact(str(sharded), tracking).name == "best_path.txt"
    single = tmp_path / "single.ckpt"
    single.write_bytes(b"x")
    tracking.log_checkpoint = "path"
    assert best_checkpoint_artifact(str(single), tracking).read_text().strip() == str(single.resolve())


def test_no_best_checkpoint_artifact_without_a_checkpoint_or_when_off(tmp_path, tracking):
    assert best_checkpoint_artifact("", tracking) is None, "no val/top1 yet: ModelCheckpoint has no best"
    assert best_checkpoint_artifact(str(tmp_path / "gone.ckpt"), tracking) is None
    (tmp_path / "best.ckpt").write_bytes(b"x")
    tracking.log_checkpoint = "none"
    assert best_checkpoint_artifact(str(tmp_path / "best.ckpt"), tracking) is None


@pytest.mark.parametrize(("data", "names"), [
    ("digits", list("0123456789")),
    ("fashion_mnist", ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot"]),
])
def test_an_embedded_dataset_gives_the_logged_model_its_real_class_names(data, names):
    data_cfg = OmegaConf.to_container(compose_config([f"data={data}"]).data)
    assert class_names(data_cfg, 10) == names  # from the table of embedded datasets: nothing is built


def test_describe_says_what_the_run_trains(fast_overrides):
    cfg = compose_config([*(o for o in fast_overrides if not o.startswith("model")), "model=efficientnet",
                          "model.phi=1"])
    plan = make_plan(cfg)
    assert describe(plan, "digits") == (
        "efficientnet-phi1: efficientnet φ=1 (d=1.2 w=1.1 r=1.15) at 37px on digits, 1 cpu process(es), "
        f"global batch 32, 32-true; per process {plan.threads.cpus} CPU(s) ({plan.threads.bound_by}): "
        f"{plan.threads.torch_threads} torch thread(s), 1 loader worker(s)"
    )


def test_the_summary_of_a_finished_run_is_what_a_restart_recognises(fast_cfg, tiny_classifier, cpu_trainer):
    cfg = fast_cfg()
    plan = make_plan(cfg)
    module = tiny_classifier()
    module.best_val_top1 = 0.5
    content = summary(plan, cfg, cpu_trainer(), module, "run123", restarts=1, status="finished", started=0.0)
    assert (content["run_id"], content["run_name"], content["best_val_top1"]) == ("run123", plan.run_name, 0.5)
    assert (content["max_epochs"], content["max_steps"], content["restarts"]) == (2, -1, 1)
    assert content["plan"]["train_resolution"] == 32 and content["wall_time_s"] > 0
    path = write_summary(plan, content)
    assert json.loads(path.read_text()) == content
    plan.ckpt_dir.mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 12}, plan.ckpt_dir / "last.ckpt")
    assert finished_summary(make_plan(cfg), cfg) == content
    assert OmegaConf.select(cfg, "tracking.uri") == content["tracking_uri"]
