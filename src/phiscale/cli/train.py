"""`phiscale-train`: the Hydra app. Composes conf/, resolves a sweep point, and trains."""

from __future__ import annotations

import os

# Numba's threading layer and JIT cache must be set before FFCV/numba import anywhere.
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")

import hydra
from omegaconf import DictConfig

from phiscale.config import conf_dir
from phiscale.errors import PhiscaleError, user_errors_as_one_line


def compose_sweep_point(cfg: DictConfig) -> tuple[DictConfig, dict[str, str]]:
    """Re-compose the config with point `sweep.index` of `sweep.file` (base, point, then the CLI's own)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    from phiscale.sweeps import load_sweep

    if cfg.sweep.index is None:
        raise PhiscaleError(f"sweep.file={cfg.sweep.file} needs sweep.index=<point>; `phiscale-sweep {cfg.sweep.file}` lists them")
    sweep = load_sweep(cfg.sweep.file)
    point = sweep.overrides(int(cfg.sweep.index))
    cli = list(HydraConfig.get().overrides.task)
    composed = compose(config_name="train", overrides=[*point, *cli])
    return composed, sweep.run_tags(int(cfg.sweep.index))


@hydra.main(config_path=str(conf_dir()), config_name="train", version_base="1.3")
@user_errors_as_one_line  # inside Hydra, which would otherwise print a traceback
def main(cfg: DictConfig) -> None:
    from phiscale.train.run import run_training

    tags: dict[str, str] = {}
    if cfg.sweep.file is not None:
        cfg, tags = compose_sweep_point(cfg)
    run_training(cfg, extra_tags=tags)


if __name__ == "__main__":
    main()
