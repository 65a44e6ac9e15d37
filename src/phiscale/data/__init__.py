"""Data: `.beton` files through FFCV pipelines (or an ImageFolder through plain PyTorch) to batches.

Importing this package does not import ffcv (seconds of numba compiling): only an FFCV loader or
the writer does, through `phiscale.data.numba_cache.import_ffcv`. Imports only `phiscale.errors`
and `phiscale.paths`: the data knows nothing of models.
"""

from phiscale.data.numba_cache import set_threading_layer

set_threading_layer()  # before anything imports numba

from phiscale.data.batch_loader import BatchLoader  # noqa: E402
from phiscale.data.beton_writer import write_beton  # noqa: E402
from phiscale.data.digits import DigitsDataset, ensure_digits  # noqa: E402
from phiscale.data.embedded import EMBEDDED, EmbeddedDataset, embedded_classes, ensure_embedded  # noqa: E402
from phiscale.data.loaders import make_train_loader, make_val_loader  # noqa: E402
from phiscale.data.sources import dataset_sources  # noqa: E402

__all__ = [
    "BatchLoader",
    "DigitsDataset",
    "EMBEDDED",
    "EmbeddedDataset",
    "dataset_sources",
    "embedded_classes",
    "ensure_digits",
    "ensure_embedded",
    "make_train_loader",
    "make_val_loader",
    "write_beton",
]
