"""Where phiscale keeps caches: generated datasets, numba's JIT cache, compiled DeepSpeed ops."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$PHISCALE_CACHE` (default `~/.cache/phiscale`), joined with `parts`, created on demand."""
    root = Path(os.environ.get("PHISCALE_CACHE", Path.home() / ".cache" / "phiscale")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
