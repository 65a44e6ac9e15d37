"""Shared test set-up: an isolated cache per session (datasets and JIT caches are reused)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One cache for the whole test session; scripts/test.sh points it into the checkout so
# numba's and DeepSpeed's compiled artefacts survive between runs.
os.environ.setdefault("PHISCALE_CACHE", str(ROOT / ".cache" / "phiscale"))
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")

import pytest  # noqa: E402
from support.runs import FAST  # noqa: E402


@pytest.fixture
def store(tmp_path):
    """Overrides that send outputs and the MLflow store into tmp_path."""
    return [f"paths.root={tmp_path}/outputs", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]


@pytest.fixture
def fast_overrides(store):
    """FAST + the temporary store, as `phiscale-train` arguments."""
    return [*FAST, *store]


@pytest.fixture
def fast_cfg(fast_overrides):
    """Compose the config `phiscale-train <FAST> <store> <extra>` would run."""
    from phiscale.config import compose_config

    def make(*extra: str):
        return compose_config([*fast_overrides, *extra])

    return make
