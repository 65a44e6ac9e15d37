"""Where the Hydra configs come from: the checkout's `conf/`, plus the `model` group generated from
the model table, so each fact (a model's name, its knobs, α, β, γ) is written once.

`conf/` holds the groups people edit (data, trainer, optim, tracking, experiment); `model=<name>`
options are registered here for every name in `phiscale.models.MODEL_NAMES`, with the knobs its
family accepts (`phiscale.models.resolve_scale` refuses the others).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Every model: regularisation, resolution and residual-branch init left to the family's defaults (null).
SHARED_KNOBS: dict[str, Any] = {"dropout": None, "drop_path_rate": None, "resolution": None,
                                "zero_init_residual": None}
# The knobs of each kind of model name, on top of the shared ones.
MOBILENET_KNOBS: dict[str, Any] = {"width_mult": 1.0, "depth_mult": None, "resolution_mult": None}
BASE_KNOBS: dict[str, Any] = {"width_mult": None, "depth_mult": None, "resolution_mult": None}
PRESET_KNOBS: dict[str, Any] = {}  # efficientnet_b0..b7: the published table, only resolution may change


def conf_dir() -> Path:
    """`$PHISCALE_CONF`, else the checkout's top-level `conf/`; registers the model group too."""
    path = Path(os.environ.get("PHISCALE_CONF", Path(__file__).resolve().parents[2] / "conf"))
    if not (path / "train.yaml").exists():
        from phiscale.errors import PhiscaleError

        raise PhiscaleError(f"no train.yaml in {path}; set PHISCALE_CONF to phiscale's conf/ directory")
    register_model_configs()
    register_resolvers()
    return path


def model_config(name: str) -> dict[str, Any]:
    """The `model=<name>` config: its name, its family's knobs and the shared ones."""
    from phiscale.models.scaling import ALPHA, BETA, GAMMA
    from phiscale.models.specs import EFFICIENTNET_PRESETS

    if name == "efficientnet":  # the compound-scaling family (arXiv 1905.11946, eq. 3)
        # width/depth/resolution_mult: the base network that φ scales (null = B0's 1.0)
        knobs = {"phi": 0.0, "alpha": ALPHA, "beta": BETA, "gamma": GAMMA, **BASE_KNOBS}
    elif name in EFFICIENTNET_PRESETS:
        knobs = PRESET_KNOBS
    else:
        knobs = MOBILENET_KNOBS
    return {"name": name, **knobs, **SHARED_KNOBS}


def register_model_configs() -> None:
    """One `model=<name>` option per entry of the model table, in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from phiscale.models import MODEL_NAMES

    store = ConfigStore.instance()
    for name in MODEL_NAMES:
        store.store(group="model", name=name, node=model_config(name), provider="phiscale")


def register_resolvers() -> None:
    """`${scaling:base_resolution}` (and `alpha`, `beta`, `gamma`) read `phiscale.models.scaling`."""
    from omegaconf import OmegaConf

    from phiscale.models import scaling

    if not OmegaConf.has_resolver("scaling"):
        OmegaConf.register_new_resolver("scaling", lambda key: getattr(scaling, str(key).upper()))


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    """The config `phiscale-train <overrides>` would run, for tests, notebooks and tools."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))
