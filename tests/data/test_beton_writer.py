"""ImageFolder -> .beton: every label in order and the class map, settings checked before any work,
the longer side capped, an existing file never overwritten by accident, unreadable images named."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("ffcv")

from phiscale.data import make_val_loader, write_beton  # noqa: E402
from phiscale.data.beton_file import check_beton  # noqa: E402
from phiscale.data.beton_writer import default_num_workers  # noqa: E402
from phiscale.data.imagefolder import scan_image_folder  # noqa: E402
from phiscale.errors import PhiscaleError  # noqa: E402

CPU = torch.device("cpu")
DIGITS = dict(mean=[79.0] * 3, std=[88.9] * 3, device=CPU, num_workers=2)


def test_write_beton_keeps_every_label_in_order_and_the_class_map(small_folder, tmp_path):
    out = write_beton(small_folder, tmp_path / "small.beton", compress_probability=0.5, num_workers=2,
                      progress=False)
    index = scan_image_folder(small_folder)
    labels = [label for _, label in index.samples]
    val = make_val_loader(out, batch_size=5, resolution=24, num_classes=3, **DIGITS)
    seen = torch.cat([y.clone() for _, y in val]).tolist()
    assert (len(val), val.num_samples) == (4, 16)
    assert seen == labels
    class_map = json.loads((tmp_path / "small.classes.json").read_text())
    assert class_map["classes"] == ["class_000", "class_001", "class_002"]
    assert class_map["class_to_idx"]["class_002"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "small.beton", "small.classes.json"]


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


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("out.bin", {}, r"should end in .beton, e.g. out.beton"),
        ("out.beton", {"jpeg_quality": 0}, "jpeg_quality=0 is outside 1..100"),
        ("out.beton", {"compress_probability": -0.1}, "compress_probability=-0.1 is outside 0..1"),
        ("out.beton", {"max_resolution": 0}, "max_resolution=0 must be a positive side length"),
    ],
)
def test_bad_settings_are_refused_before_any_work(small_folder, tmp_path, name, kwargs, message):
    with pytest.raises(PhiscaleError, match=message):
        write_beton(small_folder, tmp_path / name, progress=False, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_max_resolution_caps_the_longer_side(small_folder, tmp_path):
    out = write_beton(small_folder, tmp_path / "small.beton", max_resolution=32, compress_probability=0.0,
                      num_workers=1, progress=False)
    info = check_beton(out, num_classes=3)
    assert info.num_samples == 16 and max(info.max_height, info.max_width) == 32  # the largest source is 70 px
    assert json.loads((tmp_path / "small.classes.json").read_text())["max_resolution"] == 32


def test_default_workers_are_the_cores_this_process_may_use():
    import os

    assert default_num_workers() == max(1, min(16, len(os.sched_getaffinity(0))))
