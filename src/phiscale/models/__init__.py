"""MobileNet v1/v2/v3 and EfficientNet B0–B7 from one row language, plus compound scaling for any φ.

`phiscale.models.scaling` (the scaling facts) and `phiscale.models.specs` (the architecture tables
and model names) import no torch; the builder is loaded on first use of a name below, so configs,
sweeps and the report stay light. Imports only `phiscale.errors`: the models know nothing of
Lightning, data or tracking.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MODEL_NAMES": "phiscale.models.specs",
    "PRESET_NAMES": "phiscale.models.specs",
    "ModelScale": "phiscale.models.build",
    "build_model": "phiscale.models.build",
    "resolve_scale": "phiscale.models.build",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'phiscale.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
