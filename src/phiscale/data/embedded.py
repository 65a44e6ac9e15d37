"""The embedded datasets (made from files on this machine, no download): the table of them, and the
one builder that writes each once under `$PHISCALE_CACHE/data/<name>/<version>`: an ImageFolder per
split, `classes.json` and the two `.beton`s, under a file lock, renamed into place when complete."""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from phiscale.errors import PhiscaleError
from phiscale.paths import cache_dir

# data.name -> the module that describes it in a module-level `SPEC` (imported on first use).
EMBEDDED = {"digits": "phiscale.data.digits", "fashion_mnist": "phiscale.data.fashion_mnist"}
# From this many images a first build takes long enough to show its progress, and its `.betons` are
# written by every CPU (digits' 1,797 keep one writer: the same file, byte for byte, as before).
LARGE = 10_000
BETON_PAGE_SIZE = 2**21  # FFCV's smallest page: little disk wasted on small images


@dataclass(frozen=True)
class EmbeddedSpec:
    """What the builder needs to know about one embedded dataset."""

    name: str  # data.name, and the cache folder
    version: str  # bump when the layout or the split changes: a new folder is built beside the old
    side: int  # the stored images' side: the `.betons`' max_resolution (no resampling)
    classes: tuple[str, ...]  # the human class names, in label order
    folders: tuple[str, ...]  # the class folder names: sorted, they are in label order (the loaders' labels)
    num_images: int  # train + val
    # (root, source_dir) -> writes root/{train,val}/<folder>/<image>; source_dir is data.source_dir
    write_images: Callable[[Path, Path | None], None]

    def __post_init__(self) -> None:
        if list(self.folders) != sorted(self.folders) or len(self.folders) != len(self.classes):
            raise PhiscaleError(f"{self.name}: class folders {self.folders} must be one per class and sorted in "
                                f"label order (the loaders label by sorted folder name): prefix them with the label")


@dataclass(frozen=True)
class EmbeddedDataset:
    """The built files of one embedded dataset."""

    train_dir: Path
    val_dir: Path
    train_beton: Path | None  # None when built without FFCV (`betons=False`) and not yet written
    val_beton: Path | None
    classes: tuple[str, ...]


def embedded_spec(name: str) -> EmbeddedSpec:
    if name not in EMBEDDED:
        raise PhiscaleError(f"data.name={name!r} is not an embedded dataset: use one of {', '.join(EMBEDDED)}, "
                            f"or give data.train_path and data.val_path")
    return importlib.import_module(EMBEDDED[name]).SPEC


def embedded_classes(name: str) -> tuple[str, ...]:
    """The human class names of embedded dataset `name`, in label order (read from its table row, not built)."""
    return embedded_spec(name).classes


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """One builder at a time across processes (DDP ranks, SLURM array tasks on a shared cache)."""
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_embedded(name: str, *, betons: bool = True, source_dir: str | Path | None = None) -> EmbeddedDataset:
    """The ImageFolders of embedded dataset `name` (and its `.beton`s when `betons`), built on first
    use from `source_dir` (None: the dataset's default); idempotent, and safe when several
    processes call it at once (the second waits for the lock, then finds the files)."""
    spec = embedded_spec(name)
    base = cache_dir("data", spec.name)
    root = base / spec.version
    folders, train_beton, val_beton = root / "images", root / "train.beton", root / "val.beton"
    done = folders.is_dir() and (not betons or (train_beton.exists() and val_beton.exists()))
    if not done:
        large = spec.num_images >= LARGE
        with _locked(base / f".{spec.version}.lock"):
            if not folders.is_dir():
                if large:
                    print(f"phiscale: building {spec.name} ({spec.num_images:,} images) once, in {root}",
                          file=sys.stderr, flush=True)
                tmp = base / f".{spec.version}-images-{os.getpid()}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    spec.write_images(tmp, Path(source_dir).expanduser() if source_dir is not None else None)
                    root.mkdir(exist_ok=True)
                    os.rename(tmp, folders)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                (root / "classes.json").write_text(json.dumps({"classes": list(spec.classes)}))
            if betons:
                from phiscale.data.beton_writer import default_num_workers, write_beton

                for split, beton in (("train", train_beton), ("val", val_beton)):
                    if not beton.exists():
                        write_beton(folders / split, beton, max_resolution=spec.side, compress_probability=0.0,
                                    num_workers=default_num_workers() if large else 1, force=True,
                                    progress=large, page_size=BETON_PAGE_SIZE)
    return EmbeddedDataset(
        train_dir=folders / "train",
        val_dir=folders / "val",
        train_beton=train_beton if betons or train_beton.exists() else None,
        val_beton=val_beton if betons or val_beton.exists() else None,
        classes=spec.classes,
    )
