"""The second embedded dataset: Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv 1708.07747), 60,000
train and 10,000 test 28x28 greyscale photos of clothes in 10 classes, read from the idx files of
the Debian package `dataset-fashion-mnist` and built once (by `phiscale.data.embedded`) as lossless
PNG ImageFolders and raw-pixel `.beton`s; train = the 60,000, val = the 10,000 test images."""

from __future__ import annotations

import gzip
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from phiscale.data.embedded import EmbeddedSpec
from phiscale.errors import PhiscaleError

VERSION = "v1"  # bump when the layout below changes
SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")  # where the Debian package puts them; data.source_dir
PACKAGE = "dataset-fashion-mnist"
SIDE = 28
# The labels 0-9 in order (the dataset's README, arXiv 1708.07747 Table 1).
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# "0_T-shirt_top" ... "9_Ankle_boot": one digit first, so the sorted folders are in label order.
FOLDERS = tuple(f"{label}_{name.replace('/', '_').replace(' ', '_')}" for label, name in enumerate(CLASSES))
FILES = {  # split -> (images, labels), the names the dataset is published under
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SIZES = {"train": 60_000, "val": 10_000}
# idx format (LeCun et al., the MNIST page; Fashion-MNIST keeps it): a big-endian uint32 magic number
# 0x0000080N (unsigned bytes, N dimensions), N uint32 sizes, then the data.
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801
PNG_LEVEL = 1  # lossless at any level; writing is bound by creating 70,000 files, not by zlib


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of one gzipped idx file; a corrupt or truncated file is a one-line PhiscaleError."""
    fix = f"reinstall it (apt-get install --reinstall {PACKAGE})"
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as err:
        raise PhiscaleError(f"{path} is not a readable gzip file ({type(err).__name__}: {err}): {fix}") from None
    ndim = magic & 0xFF
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        shown = f"{found:#010x}" if found is not None else "none"
        raise PhiscaleError(f"{path} has idx magic number {shown}, not {magic:#010x}: {fix}")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise PhiscaleError(f"{path} holds {len(raw) - header} bytes after its header, its shape {shape} needs "
                            f"{int(np.prod(shape))}: {fix}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def load_split(split: str, source_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels uint8 [n]) of `split` (train | val) from `source_dir`."""
    source = Path(source_dir) if source_dir is not None else SOURCE_DIR
    paths = [source / name for name in FILES[split]]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise PhiscaleError(f"Fashion-MNIST is not in {source} (no {missing[0]}): apt-get install {PACKAGE}, "
                            f"or set data.source_dir to a folder holding its four idx .gz files")
    images, labels = read_idx(paths[0], IMAGE_MAGIC), read_idx(paths[1], LABEL_MAGIC)
    if images.shape != (SIZES[split], SIDE, SIDE) or labels.shape != (SIZES[split],) or labels.max() >= len(CLASSES):
        raise PhiscaleError(f"{source}: {split} holds images {images.shape} and labels {labels.shape} up to "
                            f"{labels.max()}, Fashion-MNIST has {SIZES[split]} of {SIDE}x{SIDE} in "
                            f"{len(CLASSES)} classes: reinstall {PACKAGE}")
    return images, labels


def _write_image_folders(root: Path, source_dir: Path | None = None) -> None:
    """root/{train,val}/<folder>/<index in the idx file>.png, greyscale (the loaders read it as RGB)."""
    from tqdm import tqdm

    splits = {split: load_split(split, source_dir) for split in FILES}  # every file checked before writing
    jobs = []
    for split, (images, labels) in splits.items():
        for folder in FOLDERS:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        jobs += [(images[i], root / split / FOLDERS[labels[i]] / f"{i:05d}.png") for i in range(len(labels))]

    def save(job) -> None:
        Image.fromarray(job[0], mode="L").save(job[1], compress_level=PNG_LEVEL)

    # Threads: PIL and the file system release the GIL, and file creation dominates.
    with ThreadPoolExecutor(max(1, min(8, len(os.sched_getaffinity(0))))) as pool:
        for _ in tqdm(pool.map(save, jobs, chunksize=256), total=len(jobs), desc="writing PNGs", unit="img"):
            pass


SPEC = EmbeddedSpec(name="fashion_mnist", version=VERSION, side=SIDE, classes=CLASSES, folders=FOLDERS,
                    num_images=sum(SIZES.values()), write_images=_write_image_folders)
