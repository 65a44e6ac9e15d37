"""libffcv's decode and resize, declared to numba by symbol (so numba can cache their callers), give
what ffcv's own ctypes wrappers give, pixel for pixel."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from phiscale.data.numba_cache import import_ffcv

import_ffcv()
libffcv = pytest.importorskip("ffcv.libffcv")

from numba import njit  # noqa: E402

from phiscale.data.libffcv_cached import imdecode, resize_crop  # noqa: E402

cached_resize_crop = njit(resize_crop)
cached_imdecode = njit(imdecode)


def test_resize_crop_equals_ffcvs_on_an_odd_crop():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    ours, theirs = (np.zeros((16, 24, 3), np.uint8) for _ in range(2))
    cached_resize_crop(source, 3, 30, 5, 50, ours)
    libffcv.resize_crop(source, 3, 30, 5, 50, theirs)
    assert ours.any() and np.array_equal(ours, theirs)


@pytest.mark.parametrize("flip", [False, True])
def test_imdecode_equals_ffcvs_on_a_jpeg(flip):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    jpeg = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
    ours, theirs = (np.zeros((30, 40, 3), np.uint8) for _ in range(2))
    assert cached_imdecode(jpeg, ours, 30, 40, 30, 40, 0, 0, 1, 1, False, flip) == 0
    assert libffcv.imdecode(jpeg, theirs, 30, 40, 30, 40, 0, 0, 1, 1, False, flip) == 0
    assert ours.any() and np.array_equal(ours, theirs)
