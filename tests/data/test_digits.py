"""The embedded digits set: real, stratified, built once even when processes race for it."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from phiscale.data import DigitsDataset, dataset_sources, ensure_digits
from phiscale.data.imagefolder import scan_image_folder

BUILD = "from phiscale.data import ensure_digits; print(ensure_digits(betons=False).train_dir)"


def test_digits_split_is_stratified_and_complete():
    digits = ensure_digits(betons=False)
    assert isinstance(digits, DigitsDataset) and digits.classes == tuple("0123456789")
    train, val = scan_image_folder(digits.train_dir), scan_image_folder(digits.val_dir)
    assert len(train) + len(val) == 1797
    names = {p.name for p, _ in train.samples} | {p.name for p, _ in val.samples}
    assert len(names) == 1797, "a sample is in both splits"
    val_counts = Counter(label for _, label in val.samples)
    train_counts = Counter(label for _, label in train.samples)
    assert all(0.18 < val_counts[c] / (val_counts[c] + train_counts[c]) < 0.22 for c in range(10))
    assert dataset_sources({"name": "digits", "loader": "torch", "train_path": None, "val_path": None}) == (
        digits.train_dir, digits.val_dir)


@pytest.mark.slow
def test_two_processes_building_digits_at_once_get_one_dataset(tmp_path):
    env = {"PHISCALE_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    procs = [subprocess.Popen([sys.executable, "-c", BUILD], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1]
    train = scan_image_folder(outs[0])
    assert len(train) == 1438
    leftovers = [p.name for p in (tmp_path / "data" / "digits").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_split_indices_is_fixed_stratified_and_disjoint():
    import numpy as np

    from phiscale.data.digits import split_indices

    labels = np.repeat([0, 1, 2], [10, 5, 1])
    train, val = split_indices(labels, val_fraction=0.2, seed=0)
    assert sorted([*train.tolist(), *val.tolist()]) == list(range(16))
    assert [int((labels[val] == c).sum()) for c in range(3)] == [2, 1, 0]  # round(n * 0.2) per class
    again_train, again_val = split_indices(labels, val_fraction=0.2, seed=0)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
