"""`phiscale.tracking` hands out its names on first use: every exported name resolves, and the
store and writes load without Lightning (what keeps `phiscale-sweep submit` fast)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import phiscale.tracking as tracking


@pytest.mark.parametrize("name", tracking.__all__)
def test_every_exported_name_resolves_from_its_module(name):
    value = getattr(tracking, name)
    assert value is not None and name in dir(tracking)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        tracking.nope  # noqa: B018


def test_the_store_and_writes_load_without_lightning():
    code = ("import sys, phiscale.tracking.writes, phiscale.tracking.store\n"
            "from phiscale.tracking import client, create_parent_run\n"
            "print(sorted(m for m in ('lightning', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
