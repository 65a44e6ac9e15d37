"""`phiscale.models` hands out the builder's names on first use, so importing it (and the torch-free
scaling facts) does not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import phiscale.models
from phiscale.models import build, specs


def test_importing_the_package_does_not_import_torch():
    code = "import sys, phiscale.models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_exports_are_the_builders_and_the_tables_own():
    for name in ("ModelScale", "build_model", "resolve_scale"):
        assert getattr(phiscale.models, name) is getattr(build, name)
    for name in ("MODEL_NAMES", "PRESET_NAMES"):
        assert getattr(phiscale.models, name) is getattr(specs, name)
    assert set(phiscale.models.__all__) == {"MODEL_NAMES", "PRESET_NAMES", "ModelScale", "build_model",
                                           "resolve_scale"}


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="module 'phiscale.models' has no attribute 'resnet'"):
        phiscale.models.resnet  # noqa: B018
