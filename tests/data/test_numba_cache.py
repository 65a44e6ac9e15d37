"""Numba set-up for FFCV: OpenMP threads unless the user chose, FFCV's pipeline code cached on disk
under the phiscale cache, torch's thread count kept across `import ffcv`."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest

from phiscale.data.numba_cache import _cacheable, quiet_uncacheable_warnings

pytest.importorskip("ffcv")

# A fresh process: import FFCV the phiscale way, read one val epoch, report what numba was told.
FRESH_PROCESS = """
import json, os, sys, torch
torch.set_num_threads(2)
from phiscale.data.numba_cache import import_ffcv
ffcv = import_ffcv()
import numba
from phiscale.data import make_val_loader
val = make_val_loader(sys.argv[1], batch_size=64, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3,
                      device="cpu")
print(json.dumps({"images": sum(len(y) for _, y in val), "torch_threads": torch.get_num_threads(),
                  "cache_env": os.environ["NUMBA_CACHE_DIR"], "cache_dir": numba.config.CACHE_DIR,
                  "patched": ffcv.pipeline.compiler.Compiler._phiscale_cached,
                  "layer": numba.config.THREADING_LAYER}))
"""


def run(code: str, *args: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_THREADING_LAYER")}
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                            env=base | env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_ffcv_pipeline_code_is_cached_under_the_phiscale_cache(tmp_path):
    import json

    from phiscale.data import ensure_digits

    facts = json.loads(run(FRESH_PROCESS, str(ensure_digits().val_beton), PHISCALE_CACHE=str(tmp_path)))
    assert facts["images"] == 359
    assert facts["cache_env"] == facts["cache_dir"] == str(tmp_path / "numba")
    assert facts["patched"] and facts["layer"] == "omp", "OpenMP unless the user chose (TBB is ~1.7x slower)"
    assert facts["torch_threads"] == 2, "ffcv's Compiler set torch's thread count at import"
    cached = sorted(p.name for p in (tmp_path / "numba").rglob("*.nbi"))
    assert cached, "no numba cache index written: every process would compile FFCV's pipeline again"


def test_the_users_choices_win():
    code = ("import os, numba; from phiscale.data.numba_cache import enable_disk_cache, set_threading_layer\n"
            "set_threading_layer(); enable_disk_cache()\n"
            "print(os.environ['NUMBA_THREADING_LAYER'], numba.config.CACHE_DIR)")
    assert run(code, NUMBA_THREADING_LAYER="workqueue", NUMBA_CACHE_DIR="/tmp/mine") == "workqueue /tmp/mine"


def file_function():
    return 1


def test_only_functions_from_source_files_are_cacheable():
    namespace: dict = {}
    exec("def generated():\n    return 1\n", namespace)  # as FFCV builds its top-level pipeline function
    assert _cacheable(file_function) and not _cacheable(namespace["generated"])


def test_uncacheable_warnings_are_quiet_and_other_numba_warnings_are_not():
    from numba.core.errors import NumbaWarning

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_uncacheable_warnings()
        warnings.warn("Cannot cache compiled function \"decode\" as it uses dynamic globals", NumbaWarning,
                      stacklevel=1)
        warnings.warn("something else", NumbaWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]
