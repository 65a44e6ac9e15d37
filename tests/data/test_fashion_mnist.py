"""Fashion-MNIST from the Debian package's idx files: the paper's counts and classes, a one-line error
without the package or with a corrupt file, and one build (ImageFolder + raw `.beton`s) whose labels
are Fashion-MNIST's own."""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from phiscale.data import dataset_sources, embedded_classes, ensure_embedded
from phiscale.data.beton_file import FIELD_DESCRIPTOR, FIELD_METADATA, HEADER, check_beton, read_class_names
from phiscale.data.fashion_mnist import (
    CLASSES,
    FOLDERS,
    IMAGE_MAGIC,
    LABEL_MAGIC,
    SOURCE_DIR,
    load_split,
    read_idx,
)
from phiscale.data.imagefolder import scan_image_folder
from phiscale.errors import PhiscaleError

needs_package = pytest.mark.skipif(not (SOURCE_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                                   reason="apt-get install dataset-fashion-mnist (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def built():
    """The suite cache's build (~25 s the first time, then found): shared by this module's tests."""
    return ensure_embedded("fashion_mnist")


@pytest.fixture(scope="module")
def train():
    return load_split("train")


@needs_package
def test_the_idx_files_hold_60000_train_and_10000_test_images_in_10_balanced_classes(train):
    images, labels = train
    val_images, val_labels = load_split("val")
    assert images.shape == (60_000, 28, 28) and val_images.shape == (10_000, 28, 28)
    assert images.dtype == np.uint8 and 60 < images.mean() < 85  # 72.9 (conf/data/fashion_mnist.yaml)
    assert Counter(labels.tolist()) == dict.fromkeys(range(10), 6000)
    assert Counter(val_labels.tolist()) == dict.fromkeys(range(10), 1000)
    assert (CLASSES[0], CLASSES[6], CLASSES[9]) == ("T-shirt/top", "Shirt", "Ankle boot")
    assert list(FOLDERS) == sorted(FOLDERS) and FOLDERS[0] == "0_T-shirt_top"


@pytest.mark.parametrize(("content", "says"), [
    (gzip.compress(bytes.fromhex("00000801") + (3).to_bytes(4, "big") + bytes(3)), "magic number 0x00000801, not 0x00000803"),
    (gzip.compress(bytes.fromhex("00000803") + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28)) + bytes(28)),
     "shape (2, 28, 28) needs 1568"),
    (b"not gzip", "not a readable gzip file"),
], ids=["labels-as-images", "truncated", "not-gzip"])
def test_a_corrupt_idx_file_is_one_line_naming_the_fix(tmp_path, content, says):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(PhiscaleError, match="apt-get install --reinstall dataset-fashion-mnist") as err:
        read_idx(path, IMAGE_MAGIC)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_without_the_package_one_line_names_apt_get_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PHISCALE_CACHE", str(tmp_path / "cache"))  # nothing built there yet
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PhiscaleError, match="apt-get install dataset-fashion-mnist, or set data.source_dir") as err:
        dataset_sources({"name": "fashion_mnist", "loader": "torch", "source_dir": str(empty)})
    assert str(empty) in str(err.value) and "\n" not in str(err.value)
    assert [p.name for p in (tmp_path / "cache" / "data" / "fashion_mnist").iterdir()] == [".v1.lock"], \
        "a failed build left files behind"


@needs_package
def test_the_image_folders_hold_every_image_losslessly_under_fashion_mnists_labels(built, train):
    images, labels = train
    index = scan_image_folder(built.train_dir)
    assert index.classes == FOLDERS and len(index) == 60_000 and len(scan_image_folder(built.val_dir)) == 10_000
    for path, label in index.samples[::7919]:  # a few across the classes
        i = int(path.stem)
        assert label == labels[i], f"{path} is labelled {label}, Fashion-MNIST says {labels[i]}"
        assert np.array_equal(np.asarray(Image.open(path)), images[i]), f"{path} differs from image {i}"
    assert built.classes == CLASSES


@needs_package
def test_the_betons_store_raw_28px_pixels_with_the_same_labels(built, train):
    images, labels = train
    info = check_beton(built.train_beton, num_classes=10)
    assert info.num_samples == 60_000 and (info.max_height, info.max_width) == (28, 28)
    assert np.array_equal(np.bincount(info.labels), np.full(10, 6000))
    assert check_beton(built.val_beton, num_classes=10).num_samples == 10_000
    assert read_class_names(built.train_beton) == list(FOLDERS)
    # The first sample is class 0's first file (the lowest index labelled 0): its bytes are the idx pixels as RGB.
    row = np.dtype([("image", FIELD_METADATA[2]), ("label", FIELD_METADATA[1])], align=True)
    with open(built.train_beton, "rb") as f:
        f.seek(HEADER.itemsize + 2 * FIELD_DESCRIPTOR.itemsize)
        first = np.frombuffer(f.read(row.itemsize), dtype=row)[0]
        f.seek(int(first["image"]["data_ptr"]))
        pixels = np.frombuffer(f.read(28 * 28 * 3), np.uint8).reshape(28, 28, 3)
    i = int(np.flatnonzero(labels == 0)[0])
    assert first["image"]["mode"] == 1, "stored as JPEG, not raw"  # ffcv/fields/rgb_image.py: jpg 0, raw 1
    assert np.array_equal(pixels, np.repeat(images[i][..., None], 3, axis=2))
    assert dataset_sources({"name": "fashion_mnist", "loader": "ffcv"}) == (built.train_beton, built.val_beton)


def test_the_label_magic_is_checked_too(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(bytes.fromhex("00000801") + (2).to_bytes(4, "big") + bytes([3, 9])))
    assert read_idx(path, LABEL_MAGIC).tolist() == [3, 9]
    with pytest.raises(PhiscaleError, match="magic number 0x00000801, not 0x00000803"):
        read_idx(path, IMAGE_MAGIC)
    assert embedded_classes("fashion_mnist") == CLASSES
