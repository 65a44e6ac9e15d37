"""What a `.beton` is on disk, checked before FFCV opens it: FFCV trusts the file and can hang on a bad one.

The layout (ffcv 1.0.2, `ffcv/types.py`, format version 2): a header, one descriptor per field, one
metadata row per sample, the sample data pages, then the allocation table at `alloc_table_ptr`
(one (sample_id, ptr, size) row per allocation) to the end of the file.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phiscale.errors import PhiscaleError

BETON_VERSION = 2
HEADER = np.dtype(
    [("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
     ("alloc_table_ptr", "<u8")],
    align=True,
)
FIELD_DESCRIPTOR = np.dtype(
    [("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True
)
ALLOC_ROW = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
# Per-sample metadata of the two fields phiscale writes (ffcv.fields.RGBImageField / IntField).
FIELD_METADATA = {
    2: np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")]),
    1: np.dtype("<i8"),
}
FIELD_TYPE_NAMES = {0: "float", 1: "int", 2: "rgb_image", 3: "bytes", 4: "ndarray", 5: "json", 6: "tensor"}
IMAGE_FIELD, LABEL_FIELD = "image", "label"
# ffcv-imagenet names its files <split>_<max side>_<compress probability>_<jpeg quality>.beton.
_FFCV_IMAGENET_NAME = re.compile(r"_(\d+)_(\d*\.?\d+)_(\d+)$")


@dataclass(frozen=True)
class BetonInfo:
    """What phiscale needs to know about a checked `.beton` before FFCV reads it."""

    path: Path
    num_samples: int
    labels: np.ndarray  # int64 [num_samples], in file order
    max_height: int
    max_width: int

    @property
    def num_classes_seen(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def class_map_path(beton: str | Path) -> Path:
    """The class-name <-> index JSON written beside a `.beton`: `x.beton` -> `x.classes.json`."""
    beton = Path(beton)
    return beton.with_name(beton.stem + ".classes.json")


def read_class_names(beton: str | Path) -> list[str] | None:
    """Class names in label order from the JSON beside `beton`, or None when there is none."""
    path = class_map_path(beton)
    if not path.is_file():
        return None
    return list(json.loads(path.read_text())["classes"])


def writer_command(beton: str | Path, src_dir: str | Path | None = None, *, force: bool = False) -> str:
    """The `phiscale-write-beton` command that creates `beton`, quoted for a shell (storage settings
    read back from an ffcv-imagenet style name such as `train_500_0.50_90.beton`)."""
    beton = Path(beton)
    args = ["phiscale-write-beton", str(src_dir or "SRC_DIR"), str(beton)]
    match = _FFCV_IMAGENET_NAME.search(beton.stem)
    if match:
        side, prob, quality = match.groups()
        args += ["--max-resolution", side, "--compress-probability", prob, "--jpeg-quality", quality]
    if force:
        args.append("--force")
    command = f"`{shlex.join(args)}`"
    return command if src_dir else command + " (SRC_DIR: the ImageFolder it came from, one subfolder per class)"


def _corrupt(path: Path, why: str) -> PhiscaleError:
    return PhiscaleError(
        f"{str(path)!r} is not a complete .beton ({why}): it is truncated or corrupt; write it again with "
        f"{writer_command(path, force=True)}"
    )


def check_beton(path: str | Path, *, num_classes: int | None = None) -> BetonInfo:
    """Check the header, field layout, metadata and allocation table against the file size, and that
    the labels fit `num_classes`; a bad file is a one-line PhiscaleError, never an FFCV hang."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PhiscaleError(f"FFCV file {str(path)!r} does not exist; create it with {writer_command(path)}")
    if path.is_dir():
        raise PhiscaleError(
            f"{str(path)!r} is a directory, not a .beton: use data.loader=torch for an ImageFolder, or convert "
            f"it with {writer_command(path.with_suffix('.beton'), path)}"
        )
    size = path.stat().st_size
    if size < HEADER.itemsize:
        raise _corrupt(path, f"{size} bytes, shorter than the {HEADER.itemsize}-byte header")
    with path.open("rb") as f:
        header = np.frombuffer(f.read(HEADER.itemsize), dtype=HEADER)[0]
        version, num_fields = int(header["version"]), int(header["num_fields"])
        num_samples, table_ptr = int(header["num_samples"]), int(header["alloc_table_ptr"])
        page_size = int(header["page_size"])
        if version != BETON_VERSION:
            raise _corrupt(path, f"format version {version}, expected {BETON_VERSION}")
        if not 1 <= num_fields <= 64 or page_size < 1 or page_size & (page_size - 1):
            raise _corrupt(path, f"header says {num_fields} fields, page size {page_size}")
        descriptors_end = HEADER.itemsize + num_fields * FIELD_DESCRIPTOR.itemsize
        if table_ptr == 0:
            raise _corrupt(path, "no allocation table: the writer did not finish")
        if not descriptors_end <= table_ptr <= size or (size - table_ptr) % ALLOC_ROW.itemsize:
            raise _corrupt(path, f"allocation table at byte {table_ptr} does not fit a {size}-byte file")
        descriptors = np.frombuffer(f.read(num_fields * FIELD_DESCRIPTOR.itemsize), dtype=FIELD_DESCRIPTOR)
        names = [bytes(d["name"]).rstrip(b"\0").decode("ascii", "replace") for d in descriptors]
        types = [int(d["type_id"]) for d in descriptors]
        if names[:2] != [IMAGE_FIELD, LABEL_FIELD] or types[:2] != [2, 1] or num_fields != 2:
            found = ", ".join(f"{n}:{FIELD_TYPE_NAMES.get(t, t)}" for n, t in zip(names, types, strict=True))
            raise PhiscaleError(
                f"{str(path)!r} has fields ({found}); phiscale reads (image:rgb_image, label:int): "
                f"write it with {writer_command(path, force=True)}"
            )
        row = np.dtype([("image", FIELD_METADATA[2]), ("label", FIELD_METADATA[1])], align=True)
        if descriptors_end + num_samples * row.itemsize > table_ptr:
            raise _corrupt(path, f"{num_samples} samples of metadata overrun the data")
        metadata = np.frombuffer(f.read(num_samples * row.itemsize), dtype=row)
        f.seek(table_ptr)
        table = np.frombuffer(f.read(size - table_ptr), dtype=ALLOC_ROW)
    if num_samples == 0:
        raise PhiscaleError(f"{str(path)!r} holds no samples: write it from a non-empty ImageFolder")
    images = metadata["image"]
    if (table["ptr"] + table["size"] > table_ptr).any() or (table["sample_id"] >= num_samples).any():
        raise _corrupt(path, "allocation table points outside the data")
    starts = np.sort(table["ptr"])
    if len(table) < num_samples or not np.isin(images["data_ptr"], starts).all():
        raise _corrupt(path, "some images have no data")
    if (images["mode"] > 1).any() or (images["width"] == 0).any() or (images["height"] == 0).any():
        raise _corrupt(path, "image metadata is invalid")
    labels = metadata["label"].astype(np.int64)
    if (labels < 0).any():
        raise _corrupt(path, f"negative label {int(labels.min())}")
    info = BetonInfo(path, num_samples, labels, int(images["height"].max()), int(images["width"].max()))
    if num_classes is not None and info.num_classes_seen > num_classes:
        raise PhiscaleError(
            f"{str(path)!r} has labels up to {info.num_classes_seen - 1} but num_classes={num_classes}: "
            f"set data.num_classes={info.num_classes_seen} (or more), or use the matching dataset"
        )
    return info
