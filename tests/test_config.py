"""Where configs come from: every model × data × trainer option composes, the model group is
generated from the model table with each family's knobs, and YAML reads the scaling facts."""

from __future__ import annotations

import itertools

import pytest
from omegaconf import OmegaConf

from phiscale.config import compose_config, conf_dir, model_config, register_model_configs, register_resolvers
from phiscale.errors import PhiscaleError
from phiscale.models import MODEL_NAMES, PRESET_NAMES, resolve_scale
from phiscale.models.scaling import ALPHA, BASE_RESOLUTION, BETA, GAMMA
from phiscale.train.plan import model_kwargs

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
    from phiscale.train.optim import RECIPES

    cfg = compose_config([f"optim={optim}", f"tracking={tracking}"])
    assert cfg.optim.name == optim and optim in RECIPES, f"optim={optim} names no optimiser the trainer knows"
    assert "://" in cfg.tracking.uri


def test_a_default_run_logs_its_model_and_registers_it_only_when_asked():
    cfg = compose_config([])
    assert cfg.tracking.log_model is True and cfg.tracking.register is None


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


SHARED = {"dropout": None, "drop_path_rate": None, "resolution": None, "zero_init_residual": None}


def test_model_config_per_family():
    assert model_config("efficientnet") == {"name": "efficientnet", "phi": 0.0, "alpha": ALPHA, "beta": BETA,
                                            "gamma": GAMMA, "width_mult": None, "depth_mult": None,
                                            "resolution_mult": None, **SHARED}, "base multipliers: null = B0's"
    assert model_config("efficientnet_b3") == {"name": "efficientnet_b3", **SHARED}, "presets are fixed"
    assert model_config("mobilenet_v2") == {"name": "mobilenet_v2", "width_mult": 1.0, "depth_mult": None,
                                            "resolution_mult": None, **SHARED}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_config_is_accepted_by_its_model(name):
    assert resolve_scale(name, **model_kwargs(model_config(name))).name == name


def test_the_config_store_lists_every_model_of_the_table():
    from hydra.core.config_store import ConfigStore

    register_model_configs()
    assert sorted(ConfigStore.instance().list("model")) == sorted(f"{name}.yaml" for name in MODEL_NAMES)
    assert len(PRESET_NAMES) == len(MODEL_NAMES) - 1


def test_the_scaling_resolver_reads_the_scaling_facts():
    register_resolvers()
    register_resolvers()  # idempotent: conf_dir() registers it on every call
    facts = OmegaConf.create({"r": "${scaling:base_resolution}", "a": "${scaling:alpha}", "g": "${scaling:GAMMA}"})
    assert (facts.r, facts.a, facts.g) == (BASE_RESOLUTION, ALPHA, GAMMA)
    assert compose_config(["data=imagenet"]).data.base_resolution == BASE_RESOLUTION


def test_a_conf_dir_without_train_yaml_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PHISCALE_CONF", str(tmp_path))
    with pytest.raises(PhiscaleError, match=f"no train.yaml in {tmp_path}; set PHISCALE_CONF"):
        conf_dir()
    monkeypatch.delenv("PHISCALE_CONF")
    assert (conf_dir() / "train.yaml").is_file()


def test_augmentation_options_compose_and_the_paper_recipe_uses_autoaugment():
    assert compose_config([]).aug.policy == "none"
    for option in ("none", "autoaugment", "randaugment"):
        cfg = compose_config([f"aug={option}"])
        assert cfg.aug.policy == option and cfg.aug.mixup == 0.0 and cfg.aug.num_ops == 2
    assert compose_config(["experiment=imagenet_efficientnet"]).aug.policy == "autoaugment"


# ---- which recipe applies: data=digits brings conf/recipe/digits.yaml; ImageNet data keep the paper's
RECIPE_FILE = OmegaConf.load(conf_dir() / "recipe" / "digits.yaml")
RECIPE_OPTIM = RECIPE_FILE.defaults[0]["override /optim@_global_.optim"]
CPU_EPOCHS = OmegaConf.load(conf_dir() / "trainer" / "cpu.yaml").max_epochs
RMSPROP_LR = OmegaConf.load(conf_dir() / "optim" / "rmsprop_tf.yaml").lr_per_256
IMAGEFOLDER = ["data=imagefolder", "data.train_path=/x/train.beton", "data.val_path=/x/val.beton", "data.num_classes=37"]


def dotted(node, prefix: str = "") -> dict:
    """{"trainer.max_epochs": 8, ...}: every leaf key of a config node."""
    out = {}
    for key, value in node.items():
        if OmegaConf.is_dict(value):
            out |= dotted(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


RECIPE = {k: v for k, v in dotted(RECIPE_FILE).items() if not k.startswith("defaults")}


def recipe_keys(cfg) -> dict:
    """The keys the digits recipe sets, as composed, and the optimiser it picks."""
    return {"optim.name": cfg.optim.name} | {key: OmegaConf.select(cfg, key) for key in RECIPE}


def test_the_default_digits_run_gets_the_short_run_recipe():
    cfg = compose_config([])
    assert cfg.data.name == "digits"
    assert recipe_keys(cfg) == {"optim.name": RECIPE_OPTIM} | RECIPE
    assert {"bn_momentum", "trainer.max_epochs", "model.dropout"} <= set(RECIPE)
    assert RECIPE["trainer.max_epochs"] != CPU_EPOCHS, "the recipe's epochs must differ to show they win over trainer/cpu"
    assert RECIPE_OPTIM != "rmsprop_tf", "the optimiser group's default changes with data=digits"


@pytest.mark.parametrize("data", [["data=imagenet"], IMAGEFOLDER], ids=["imagenet", "imagefolder"])
def test_imagenet_style_data_keep_the_papers_recipe(data):
    cfg = compose_config(data)
    assert cfg.optim.name == "rmsprop_tf" and cfg.optim.lr_per_256 == RMSPROP_LR
    assert cfg.bn_momentum is None, "the family's BN momentum (0.01 for EfficientNet), not the digits recipe's"
    assert cfg.trainer.max_epochs == CPU_EPOCHS
    assert all(cfg.model[k] is None for k in ("dropout", "drop_path_rate", "zero_init_residual"))


def test_an_optimiser_on_the_command_line_wins_over_the_recipe():
    cfg = compose_config(["optim=rmsprop_tf"])
    assert cfg.optim.name == "rmsprop_tf" and cfg.optim.lr_per_256 == RMSPROP_LR
    assert cfg.bn_momentum == RECIPE["bn_momentum"]  # the rest of the recipe still applies to digits


def test_command_line_keys_win_over_the_recipe():
    cfg = compose_config(["trainer.max_epochs=3", "bn_momentum=0.2", "optim.lr_per_256=0.05", "model.dropout=0.3"])
    assert (cfg.trainer.max_epochs, cfg.bn_momentum, cfg.optim.lr_per_256, cfg.model.dropout) == (3, 0.2, 0.05, 0.3)


def test_the_imagenet_experiment_keeps_its_own_recipe():
    cfg = compose_config(["experiment=imagenet_efficientnet"])
    assert (cfg.data.name, cfg.optim.name, cfg.optim.lr_per_256) == ("imagenet", "rmsprop_tf", RMSPROP_LR)
    assert cfg.trainer.max_epochs == 350 and cfg.bn_momentum is None


def test_the_digits_demo_is_the_recipe_on_its_own_model():
    cfg = compose_config(["experiment=digits_demo"])
    assert cfg.model.name == "mobilenet_v3_small" and cfg.run_name == "digits-demo"
    assert recipe_keys(cfg) == recipe_keys(compose_config([]))


def test_the_recipe_can_be_added_to_other_small_data():
    cfg = compose_config([*IMAGEFOLDER, "+recipe=digits"])
    assert cfg.data.name == "imagefolder" and recipe_keys(cfg) == recipe_keys(compose_config([]))


def test_fashion_mnist_brings_its_own_recipe_and_the_command_line_wins_over_it():
    recipe = OmegaConf.load(conf_dir() / "recipe" / "fashion_mnist.yaml")
    cfg = compose_config(["data=fashion_mnist", "model=efficientnet_b0"])
    assert (cfg.data.name, cfg.optim.name, cfg.bn_momentum) == ("fashion_mnist", "sgd_cosine", 0.1)
    assert (cfg.optim.lr_per_256, cfg.trainer.max_epochs) == (recipe.optim.lr_per_256, recipe.trainer.max_epochs)
    assert cfg.data.flip_prob > 0, "a mirrored garment is still one: the digits' no-flip rule does not apply"
    cfg = compose_config(["data=fashion_mnist", "trainer.max_epochs=2", "optim.lr_per_256=0.05"])
    assert (cfg.trainer.max_epochs, cfg.optim.lr_per_256) == (2, 0.05)


def test_the_help_names_the_recipe_that_applies():
    help_text = OmegaConf.load(conf_dir() / "train.yaml").hydra.help.header
    assert "conf/recipe/digits.yaml" in help_text and f"optim={RECIPE_OPTIM}," in help_text
    assert f"{RECIPE['trainer.max_epochs']} epochs" in help_text and "optim=rmsprop_tf" in help_text
