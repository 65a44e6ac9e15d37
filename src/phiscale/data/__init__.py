"""Data: `.beton` files through FFCV pipelines (or an ImageFolder through plain PyTorch) to batches.

Importing this package imports neither torch nor ffcv (seconds of start-up): the names below are
imported on first use (PEP 562), so `phiscale-write-beton --help`, which reads the writer's defaults,
answers without torch (issue 31); only an FFCV loader or the writer imports ffcv, through
`phiscale.data.numba_cache.import_ffcv`. Imports only `phiscale.errors` and `phiscale.paths`: the data
knows nothing of models.
"""

from __future__ import annotations

import importlib
from typing import Any

from phiscale.data.numba_cache import set_threading_layer

set_threading_layer()  # before anything imports numba

# name -> the module of this package that defines it
_EXPORTS = {
    "BatchLoader": "batch_loader",
    "write_beton": "beton_writer",
    "DigitsDataset": "digits", "ensure_digits": "digits",
    "EMBEDDED": "embedded", "EmbeddedDataset": "embedded", "embedded_classes": "embedded",
    "ensure_embedded": "embedded",
    "make_train_loader": "loaders", "make_val_loader": "loaders",
    "dataset_sources": "sources",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`phiscale.data.<name>`: import its module now, once."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
