"""Every model × data × trainer option composes into a config the run planner accepts."""

from __future__ import annotations

import itertools

import pytest

from phiscale.config import compose_config, conf_dir
from phiscale.models import MODEL_NAMES

GROUPS = {g: sorted(p.stem for p in (conf_dir() / g).glob("*.yaml")) for g in ("data", "trainer", "optim", "tracking")}
GROUPS["model"] = sorted(MODEL_NAMES)  # generated from the model table (phiscale.config)
# Each trainer option, and DeepSpeed at each ZeRO stage (one option, the stage a key).
TRAINERS = [[f"trainer={t}"] for t in GROUPS["trainer"] if t != "deepspeed"] + [
    ["trainer=deepspeed", f"trainer.deepspeed.stage={stage}"] for stage in (1, 2, 3)
]


def test_every_group_has_its_options():
    assert {"efficientnet", "efficientnet_b0", "efficientnet_b7", "mobilenet_v1", "mobilenet_v2",
            "mobilenet_v3_large", "mobilenet_v3_small"} <= set(GROUPS["model"])
    assert {"digits", "imagenet", "imagefolder"} <= set(GROUPS["data"])
    assert {"cpu", "gpu", "ddp", "multinode", "deepspeed"} <= set(GROUPS["trainer"])
    assert {"rmsprop_tf", "sgd_cosine"} <= set(GROUPS["optim"])


@pytest.mark.parametrize(("model", "data", "trainer"), list(itertools.product(GROUPS["model"], GROUPS["data"], TRAINERS)),
                         ids=lambda v: "+".join(v) if isinstance(v, list) else v)
def test_model_data_trainer_compose(model, data, trainer):
    extra = ["data.train_path=/x/train.beton", "data.val_path=/x/val.beton", "data.num_classes=10"] if data == "imagefolder" else []
    cfg = compose_config([f"model={model}", f"data={data}", *trainer, *extra])
    assert cfg.model.name == model
    assert cfg.data.name == data
    assert cfg.trainer.max_epochs >= 1
    if trainer[0] == "trainer=deepspeed":
        assert cfg.trainer.strategy == "deepspeed" and cfg.trainer.deepspeed.stage == int(trainer[1][-1])


@pytest.mark.parametrize("optim", GROUPS["optim"])
@pytest.mark.parametrize("tracking", GROUPS["tracking"])
def test_optim_and_tracking_compose(optim, tracking):
    cfg = compose_config([f"optim={optim}", f"tracking={tracking}"])
    assert cfg.optim.name == optim
    assert "://" in cfg.tracking.uri


def test_unknown_option_lists_the_choices():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        compose_config(["model=resnet50"])
    assert "efficientnet_b0" in str(err.value) and "mobilenet_v2" in str(err.value)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml")))
def test_experiments_compose(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.model.name and cfg.data.name and cfg.optim.name


def test_the_demo_is_a_small_cpu_run_on_digits():
    cfg = compose_config(["experiment=digits_demo"])
    assert (cfg.data.name, cfg.trainer.accelerator, cfg.run_name) == ("digits", "cpu", "digits-demo")
