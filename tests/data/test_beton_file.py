"""What a .beton is, checked before FFCV opens it: a missing, truncated or foreign file is one line
naming the writer command that fixes it, never an FFCV hang."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from phiscale.data import dataset_sources, ensure_digits, make_train_loader, make_val_loader
from phiscale.data.beton_file import check_beton, class_map_path, read_class_names, writer_command
from phiscale.errors import PhiscaleError

ARGS = dict(batch_size=8, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3, device="cpu")


def test_missing_beton_prints_the_writer_command(tmp_path):
    missing = tmp_path / "train_500_0.50_90.beton"
    cfg = {"name": "imagenet", "loader": "ffcv", "train_path": str(missing), "val_path": str(missing)}
    with pytest.raises(PhiscaleError, match="does not exist") as err:
        dataset_sources(cfg)
    assert (f"phiscale-write-beton SRC_DIR {missing} --max-resolution 500 --compress-probability 0.50 "
            f"--jpeg-quality 90") in str(err.value)
    with pytest.raises(PhiscaleError, match="phiscale-write-beton SRC_DIR"):
        make_val_loader(tmp_path / "val.beton", **ARGS)


def test_labels_beyond_num_classes_are_refused_at_open():
    digits = ensure_digits()
    with pytest.raises(PhiscaleError, match=r"labels up to 9 but num_classes=5.*data.num_classes=10"):
        make_train_loader(digits.train_beton, num_classes=5, **ARGS)


@pytest.mark.parametrize("keep", [0, 24, 4096, -1], ids=["empty", "header-only", "truncated", "last-byte-cut"])
def test_truncated_beton_is_refused_before_ffcv_opens_it(tmp_path, keep):
    good = ensure_digits().val_beton
    bad = tmp_path / "val.beton"
    data = good.read_bytes()
    bad.write_bytes(data[:keep])
    with pytest.raises(PhiscaleError, match="truncated or corrupt.*--force"):
        make_val_loader(bad, **ARGS)


def test_random_bytes_are_not_a_beton(tmp_path):
    bad = tmp_path / "noise.beton"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 1 << 16, dtype=np.uint8).tobytes())
    with pytest.raises(PhiscaleError, match="truncated or corrupt"):
        check_beton(bad)
    good = ensure_digits().val_beton
    damaged = tmp_path / "damaged.beton"
    shutil.copy(good, damaged)
    with damaged.open("r+b") as f:  # a valid header whose allocation table pointer is garbage
        f.seek(16)
        f.write((123456789).to_bytes(8, "little"))
    with pytest.raises(PhiscaleError, match="allocation table"):
        check_beton(damaged)


def test_the_digits_val_beton_checks_out():
    info = check_beton(ensure_digits().val_beton, num_classes=10)
    assert (info.num_samples, info.num_classes_seen, info.max_height, info.max_width) == (359, 10, 32, 32)
    assert info.labels.dtype == np.int64 and sorted(set(info.labels.tolist())) == list(range(10))


def test_a_directory_is_not_a_beton_and_the_message_says_how_to_convert_it(tmp_path):
    with pytest.raises(PhiscaleError, match=rf"is a directory, not a .beton: use data.loader=torch .*"
                                            rf"`phiscale-write-beton {tmp_path} {tmp_path}.beton`"):
        check_beton(tmp_path)


def test_writer_command_reads_ffcv_imagenet_names_and_quotes_paths(tmp_path):
    assert writer_command("/data/train_256_0.10_95.beton", "/data/train") == (
        "`phiscale-write-beton /data/train /data/train_256_0.10_95.beton --max-resolution 256 "
        "--compress-probability 0.10 --jpeg-quality 95`")
    assert writer_command("my data.beton", force=True) == (
        "`phiscale-write-beton SRC_DIR 'my data.beton' --force` (SRC_DIR: the ImageFolder it came from, "
        "one subfolder per class)")


def test_class_names_come_from_the_json_beside_the_beton(tmp_path):
    beton = tmp_path / "train.beton"
    assert class_map_path(beton) == tmp_path / "train.classes.json"
    assert read_class_names(beton) is None
    class_map_path(beton).write_text('{"classes": ["cat", "dog"]}')
    assert read_class_names(beton) == ["cat", "dog"]
