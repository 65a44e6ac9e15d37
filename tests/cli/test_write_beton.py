"""phiscale-write-beton: an ImageFolder becomes a checked .beton with its class map; bad settings
are one line."""

from __future__ import annotations

import json

import pytest

from phiscale.data import ensure_digits
from phiscale.data.beton_file import check_beton

pytest.importorskip("ffcv")

from phiscale.cli.write_beton import main  # noqa: E402


def test_writes_the_digits_val_folder_and_says_what_it_wrote(tmp_path, capsys):
    out = tmp_path / "val_32_0.00_90.beton"
    main([str(ensure_digits(betons=False).val_dir), str(out), "--max-resolution", "32",
          "--compress-probability", "0", "--num-workers", "1", "--no-progress"])
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out} (359 images, 10 classes, ")
    assert printed.rstrip().endswith(f"classes in {tmp_path / 'val_32_0.00_90.classes.json'}")
    info = check_beton(out, num_classes=10)
    assert (info.num_samples, info.max_height, info.max_width) == (359, 32, 32)
    assert json.loads((tmp_path / "val_32_0.00_90.classes.json").read_text())["classes"] == list("0123456789")


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--jpeg-quality=0", "jpeg_quality=0 is outside 1..100"),
     ("--compress-probability=1.5", "compress_probability=1.5 is outside 0..1"),
     ("--max-resolution=0", "max_resolution=0 must be a positive side length")],
)
def test_bad_settings_are_one_line_and_write_nothing(tmp_path, capsys, flag, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(ensure_digits(betons=False).val_dir), str(tmp_path / "x.beton"), flag, "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []
