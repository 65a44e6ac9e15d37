"""From the `data` config to the two paths the loaders open."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from phiscale.data.beton_file import check_beton
from phiscale.data.embedded import EMBEDDED, ensure_embedded
from phiscale.data.imagefolder import scan_image_folder
from phiscale.errors import PhiscaleError


def dataset_sources(data_cfg: Mapping) -> tuple[Path, Path]:
    """(train_source, val_source) for `data_cfg` (conf/data/*.yaml): an embedded dataset's (digits,
    fashion_mnist: `phiscale.data.embedded.EMBEDDED`) when it is named and the paths are null, built
    on first use from data.source_dir; otherwise the configured paths, checked to exist."""
    name, loader = data_cfg.get("name"), data_cfg.get("loader", "ffcv")
    if loader not in ("ffcv", "torch"):
        raise PhiscaleError(f"data.loader={loader!r} is not one of ffcv, torch")
    paths = [data_cfg.get("train_path"), data_cfg.get("val_path")]
    if name in EMBEDDED and paths == [None, None]:
        built = ensure_embedded(name, betons=loader == "ffcv", source_dir=data_cfg.get("source_dir"))
        return (built.train_beton, built.val_beton) if loader == "ffcv" else (built.train_dir, built.val_dir)
    sources = []
    for split, path in zip(("train", "val"), paths, strict=True):
        if path is None:
            raise PhiscaleError(f"data.{split}_path is not set for data={name}: give a "
                                f"{'.beton file' if loader == 'ffcv' else 'ImageFolder directory'}")
        path = Path(str(path)).expanduser()
        if loader == "ffcv":
            check_beton(path, num_classes=data_cfg.get("num_classes"))
        else:
            scan_image_folder(path)
        sources.append(path)
    return sources[0], sources[1]
