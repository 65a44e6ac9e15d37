"""Shared test set-up: an isolated cache per session (datasets and JIT caches are reused)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One cache for the whole test session; scripts/test.sh points it into the checkout so
# numba's and DeepSpeed's compiled artefacts survive between runs.
os.environ.setdefault("PHISCALE_CACHE", str(ROOT / ".cache" / "phiscale"))
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
