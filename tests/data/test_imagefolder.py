"""The ImageFolder layout read once: classes are the sorted subfolders, non-images are ignored, and
a missing, empty or gapped folder is one line."""

from __future__ import annotations

import pytest

from phiscale.data import make_train_loader
from phiscale.data.imagefolder import scan_image_folder
from phiscale.errors import PhiscaleError

ARGS = dict(batch_size=8, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3, device="cpu")


def test_empty_or_image_less_folders_are_refused(tmp_path):
    with pytest.raises(PhiscaleError, match="no class subfolders"):
        scan_image_folder(tmp_path)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    with pytest.raises(PhiscaleError, match="has no images.*notes.txt"):
        make_train_loader(tmp_path, loader="torch", **ARGS)
    with pytest.raises(PhiscaleError, match="not a directory"):
        scan_image_folder(tmp_path / "nowhere")


def test_classes_are_the_sorted_subfolders_and_only_images_count(small_folder):
    (small_folder / ".cache").mkdir()  # hidden folders are not classes
    (small_folder / "class_001" / "README.md").write_text("notes")
    (small_folder / "class_002" / "more").mkdir()
    (small_folder / "class_000" / "img_000.png").rename(small_folder / "class_002" / "more" / "deep.PNG")
    index = scan_image_folder(small_folder)
    assert index.classes == ("class_000", "class_001", "class_002")
    assert index.class_to_idx == {"class_000": 0, "class_001": 1, "class_002": 2}
    assert len(index) == 16 and [label for _, label in index.samples] == [0] * 3 + [1] * 7 + [2] * 6
    assert small_folder / "class_002" / "more" / "deep.PNG" in {path for path, _ in index.samples}


def test_a_class_without_images_would_leave_a_gap_in_the_labels(small_folder):
    (small_folder / "class_003").mkdir()
    (small_folder / "class_003" / "notes.txt").write_text("")
    with pytest.raises(PhiscaleError, match="class folders without images: class_003; remove them or add images"):
        scan_image_folder(small_folder)
