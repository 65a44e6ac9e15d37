"""The table of embedded datasets and its one builder: every row describes the dataset it names, with
class folders in label order; an unknown name says which exist. (The builds themselves: test_digits,
two processes at once included, and test_fashion_mnist.)"""

from __future__ import annotations

import pytest

from phiscale.data import EMBEDDED, ensure_digits, ensure_embedded
from phiscale.data.embedded import EmbeddedSpec, embedded_classes, embedded_spec
from phiscale.errors import PhiscaleError


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_every_row_describes_the_dataset_it_names(name):
    spec = embedded_spec(name)
    assert spec.name == name and len(spec.classes) == len(spec.folders) == 10
    assert list(spec.folders) == sorted(spec.folders), "the loaders label by sorted folder name"
    assert embedded_classes(name) == spec.classes


def test_class_folders_out_of_label_order_are_refused():
    with pytest.raises(PhiscaleError, match="sorted in label order"):
        EmbeddedSpec(name="x", version="v1", side=8, classes=("cat", "ant"), folders=("cat", "ant"),
                     num_images=2, write_images=lambda root, source: None)


def test_an_unknown_name_lists_the_embedded_datasets():
    with pytest.raises(PhiscaleError, match="data.name='cifar10' is not an embedded dataset: use one of digits, fashion_mnist"):
        ensure_embedded("cifar10")


def test_digits_keep_their_cache_layout():
    digits = ensure_embedded("digits", betons=False)
    assert digits == ensure_digits(betons=False)
    assert digits.train_dir.parent.name == "images" and digits.train_dir.parents[1].name == "v1"
    assert (digits.train_dir.parents[1] / "classes.json").is_file()
