"""ImageFolder -> `.beton` with ffcv-imagenet's storage settings, written so a crash never leaves a
file that looks finished (temporary name, then rename) and a bad image never hangs the writer."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from phiscale.data.beton_file import IMAGE_FIELD, LABEL_FIELD, class_map_path
from phiscale.data.imagefolder import ImageFolderIndex, scan_image_folder
from phiscale.data.numba_cache import import_ffcv
from phiscale.errors import PhiscaleError

# ffcv-imagenet's ImageNet settings (write_imagenet.sh): max side 500, 50% JPEG at quality 90.
MAX_RESOLUTION = 500
JPEG_QUALITY = 90
COMPRESS_PROBABILITY = 0.5
# FFCV's default page (4 x its 2 MiB minimum); each writer worker leaves one partly filled page.
PAGE_SIZE = 8 * 2**20


class _DecodedImages:
    """The indexable dataset FFCV's writer workers read: (RGB uint8 array, label).

    FFCV's writer waits forever for a worker that died, so a file PIL cannot decode is not raised
    here: it is recorded in `error_dir` and replaced by a 1x1 image; the caller raises afterwards.
    """

    def __init__(self, index: ImageFolderIndex, error_dir: Path):
        self.samples = index.samples
        self.error_dir = error_dir

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB")), label
        except Exception as err:  # noqa: BLE001 - any decode failure, reported by the caller
            (self.error_dir / f"{i}.txt").write_text(f"{path}: {type(err).__name__}: {err}")
            return np.zeros((1, 1, 3), np.uint8), label


def default_num_workers() -> int:
    return max(1, min(16, len(os.sched_getaffinity(0))))


def write_beton(
    imagefolder_dir: str | Path,
    out_path: str | Path,
    *,
    max_resolution: int = MAX_RESOLUTION,
    jpeg_quality: int = JPEG_QUALITY,
    compress_probability: float = COMPRESS_PROBABILITY,
    num_workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    page_size: int = PAGE_SIZE,
) -> Path:
    """Write every image of `imagefolder_dir` (labels = sorted class folders) to `out_path` and the
    class map to `<out>.classes.json`; returns `out_path`. `page_size` (a power of two >= 2 MiB) is
    FFCV's unit of reading: small datasets waste less disk with 2 MiB."""
    out = Path(out_path).expanduser()
    if out.suffix != ".beton":
        raise PhiscaleError(f"output {str(out)!r} should end in .beton, e.g. {out.with_suffix('.beton').name}")
    if out.exists() and not force:
        raise PhiscaleError(f"{str(out)!r} already exists: pass --force (force=True) to overwrite it")
    if not 1 <= jpeg_quality <= 100:
        raise PhiscaleError(f"jpeg_quality={jpeg_quality} is outside 1..100: ffcv-imagenet uses 90")
    if not 0.0 <= compress_probability <= 1.0:
        raise PhiscaleError(f"compress_probability={compress_probability} is outside 0..1: ffcv-imagenet uses 0.5")
    if max_resolution < 1:
        raise PhiscaleError(f"max_resolution={max_resolution} must be a positive side length, e.g. 500")
    index = scan_image_folder(imagefolder_dir)
    workers = num_workers or default_num_workers()
    out.parent.mkdir(parents=True, exist_ok=True)

    import_ffcv()
    import ffcv.writer
    from ffcv.fields import IntField, RGBImageField
    from tqdm import tqdm

    fields = {
        IMAGE_FIELD: RGBImageField(
            write_mode="proportion",
            max_resolution=max_resolution,
            jpeg_quality=jpeg_quality,
            compress_probability=compress_probability,
        ),
        LABEL_FIELD: IntField(),
    }
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    error_dir = Path(tempfile.mkdtemp(prefix="phiscale-write-beton-"))
    bar = partial(tqdm, desc=f"writing {out.name}", unit="img", disable=not progress)
    try:
        writer = ffcv.writer.DatasetWriter(str(tmp), fields, num_workers=workers, page_size=page_size)
        with mock.patch.object(ffcv.writer, "tqdm", bar):
            writer.from_indexed_dataset(_DecodedImages(index, error_dir), chunksize=64)
        errors = sorted(error_dir.iterdir(), key=lambda p: int(p.stem))
        if errors:
            raise PhiscaleError(
                f"{len(errors)} file(s) in {str(index.root)!r} are not readable images, first: "
                f"{errors[0].read_text()}; remove or replace them"
            )
        class_map_path(tmp).write_text(json.dumps(_class_map(index, max_resolution, jpeg_quality,
                                                             compress_probability), indent=1))
        os.replace(class_map_path(tmp), class_map_path(out))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        class_map_path(tmp).unlink(missing_ok=True)
        shutil.rmtree(error_dir, ignore_errors=True)
    return out


def _class_map(index: ImageFolderIndex, max_resolution: int, jpeg_quality: int, compress_probability: float):
    return {
        "classes": list(index.classes),
        "class_to_idx": index.class_to_idx,
        "num_samples": len(index),
        "source": str(index.root.resolve()),
        "max_resolution": max_resolution,
        "jpeg_quality": jpeg_quality,
        "compress_probability": compress_probability,
    }
