"""From the `data` config to the two paths the loaders open: the embedded digits by default, else the
configured paths, checked to exist (and, for FFCV, to be complete .betons) before any loader starts."""

from __future__ import annotations

import pytest

from phiscale.data import dataset_sources, ensure_digits
from phiscale.errors import PhiscaleError


def test_digits_by_default_as_betons_or_image_folders():
    digits = ensure_digits()
    assert dataset_sources({"name": "digits", "loader": "ffcv"}) == (digits.train_beton, digits.val_beton)
    assert dataset_sources({"name": "digits", "loader": "torch"}) == (digits.train_dir, digits.val_dir)


def test_configured_paths_are_checked_and_user_paths_expanded(small_folder, monkeypatch):
    monkeypatch.setenv("HOME", str(small_folder.parent))
    cfg = {"name": "imagefolder", "loader": "torch", "train_path": "~/folder", "val_path": str(small_folder)}
    assert dataset_sources(cfg) == (small_folder, small_folder)
    with pytest.raises(PhiscaleError, match="is not a directory"):
        dataset_sources(cfg | {"val_path": "~/nowhere"})


def test_beton_paths_are_checked_against_num_classes():
    digits = ensure_digits()
    cfg = {"name": "imagenet", "loader": "ffcv", "train_path": str(digits.train_beton),
           "val_path": str(digits.val_beton), "num_classes": 10}
    assert dataset_sources(cfg) == (digits.train_beton, digits.val_beton)
    with pytest.raises(PhiscaleError, match="labels up to 9 but num_classes=5"):
        dataset_sources(cfg | {"num_classes": 5})


@pytest.mark.parametrize(("loader", "what"), [("ffcv", ".beton file"), ("torch", "ImageFolder directory")])
def test_a_missing_path_names_the_key_and_what_it_should_be(loader, what):
    with pytest.raises(PhiscaleError, match=f"data.train_path is not set for data=imagenet: give a {what}"):
        dataset_sources({"name": "imagenet", "loader": loader, "train_path": None, "val_path": "/x"})


def test_an_unknown_loader_is_named():
    with pytest.raises(PhiscaleError, match="data.loader='tf' is not one of ffcv, torch"):
        dataset_sources({"name": "digits", "loader": "tf"})
