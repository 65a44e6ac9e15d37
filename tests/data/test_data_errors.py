"""Bad input gets one clear line naming the value and the fix, never a traceback from FFCV or a hang."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch

from phiscale.data import dataset_sources, ensure_digits, make_train_loader, make_val_loader
from phiscale.data.beton_file import check_beton
from phiscale.data.imagefolder import scan_image_folder
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
    with pytest.raises(PhiscaleError, match=r"10 classes but num_classes=5"):
        make_val_loader(digits.val_dir, loader="torch", num_classes=5, **ARGS)


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


def test_empty_or_image_less_folders_are_refused(tmp_path):
    with pytest.raises(PhiscaleError, match="no class subfolders"):
        scan_image_folder(tmp_path)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    with pytest.raises(PhiscaleError, match="has no images.*notes.txt"):
        make_train_loader(tmp_path, loader="torch", **ARGS)
    with pytest.raises(PhiscaleError, match="not a directory"):
        scan_image_folder(tmp_path / "nowhere")


def test_a_beton_given_to_the_torch_loader_and_bad_settings_name_the_fix(tmp_path):
    with pytest.raises(PhiscaleError, match="data.loader=ffcv"):
        make_val_loader(tmp_path / "x.beton", loader="torch", **ARGS)
    with pytest.raises(PhiscaleError, match="data.loader='tf'"):
        make_val_loader(tmp_path, loader="tf", **ARGS)
    with pytest.raises(PhiscaleError, match="0-255 units"):
        make_val_loader(tmp_path, **{**ARGS, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
    if importlib.util.find_spec("ffcv"):
        with pytest.raises(PhiscaleError, match="quasi_random is not implemented by FFCV with distributed"):
            make_train_loader(ensure_digits().train_beton, order="quasi_random", distributed=True, **ARGS)
    with pytest.raises(PhiscaleError, match="torch.distributed is not initialised"):
        make_val_loader(ensure_digits(betons=False).val_dir, loader="torch", distributed=True, **ARGS)
    assert not torch.distributed.is_initialized()


def test_write_beton_refuses_to_overwrite_and_reports_undecodable_images(small_folder, tmp_path, capsys):
    pytest.importorskip("ffcv")
    from phiscale.cli.write_beton import main

    out = tmp_path / "out.beton"
    out.write_bytes(b"precious")
    with pytest.raises(SystemExit) as exit_:
        main([str(small_folder), str(out), "--no-progress"])
    assert exit_.value.code == 2 and "already exists: pass --force" in capsys.readouterr().err
    (small_folder / "class_001" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(PhiscaleError, match="not readable images, first: .*broken.jpg"):
        from phiscale.data import write_beton

        write_beton(small_folder, out, force=True, num_workers=2, progress=False)
    assert out.read_bytes() == b"precious", "a failed write must leave the old file alone"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "out.beton"]


def test_importing_phiscale_data_does_not_import_ffcv_or_numba():
    import subprocess
    import sys

    code = "import sys, phiscale.data; print(sorted(m for m in ('ffcv', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"`import phiscale.data` pulled in {out.strip()} (seconds of start-up)"
