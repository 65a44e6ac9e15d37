"""Numba set-up for FFCV: OpenMP threads unless the user chose, FFCV's pipeline code cached on disk
under the phiscale cache, torch's thread count kept across `import ffcv`."""

from __future__ import annotations

import os
import re
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


# A fresh process: one train and one val batch of the digits; names the functions numba compiled (not
# loaded from its cache) while it did so.
DECODES = """
import json, sys
from numba.core import event
from phiscale.data import ensure_digits, make_train_loader, make_val_loader

compiled = []
class Compiles(event.Listener):
    def on_start(self, e):
        pass
    def on_end(self, e):
        compiled.append(e.data["dispatcher"].py_func.__qualname__)
digits = ensure_digits()
args = dict(batch_size=64, num_workers=1, resolution=32, mean=[79.0] * 3, std=[88.9] * 3, device="cpu")
train = make_train_loader(digits.train_beton, min_crop_scale=0.6, flip_prob=0.5, seed=3, **args)
val = make_val_loader(digits.val_beton, **args)
with event.install_listener("numba:compile", Compiles()):
    x, _ = next(iter(train))
    v, _ = next(iter(val))
print(json.dumps({"compiled": sorted(set(compiled)), "sums": [float(x.sum()), float(v.sum())]}), flush=True)
import os
os._exit(0)  # FFCV's loader threads stop at the end of an epoch, not of the process
"""


def test_a_second_process_loads_the_decoders_from_the_cache_and_adds_nothing_to_it(tmp_path):
    """Each image decoder's stage (the seeded train crop, FFCV's val centre crop) compiles once per cache,
    not once per process (1.2 s of every run's start, issue 31), and a process that finds it cached writes
    no new cache entry (numba's key held each process's random dispatcher uuids: the cache grew per run)."""
    import json

    cache = tmp_path / "cache"
    first = json.loads(run(DECODES, PHISCALE_CACHE=str(cache)))
    files = sorted(p.relative_to(cache) for p in cache.rglob("*.nb[ic]"))
    second = json.loads(run(DECODES, PHISCALE_CACHE=str(cache)))
    decodes = [name for name in first["compiled"] if name.endswith(".decode")]
    assert len(decodes) == 2, f"the train and val decode stages compile in a fresh cache: {first['compiled']}"
    assert not [name for name in second["compiled"] if name.endswith(".decode")], second["compiled"]
    assert sorted(p.relative_to(cache) for p in cache.rglob("*.nb[ic]")) == files, "the second process added entries"
    assert second["sums"] == first["sums"], "the cached stages decode the same images"


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
    # numba bolds a warning's text once its config is loaded (numba/core/errors.py), whatever the test order
    assert [re.sub(r"\x1b\[[0-9;]*m", "", str(w.message)) for w in seen] == ["something else"]
