"""Where the Hydra configs live: `$PHISCALE_CONF`, else the checkout's top-level `conf/`."""

from __future__ import annotations

import os
from pathlib import Path


def conf_dir() -> Path:
    path = Path(os.environ.get("PHISCALE_CONF", Path(__file__).resolve().parents[2] / "conf"))
    if not (path / "train.yaml").exists():
        from phiscale.errors import PhiscaleError

        raise PhiscaleError(f"no train.yaml in {path}; set PHISCALE_CONF to phiscale's conf/ directory")
    return path


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    """The config `phiscale-train <overrides>` would run, for tests, notebooks and tools."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))
