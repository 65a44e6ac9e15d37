"""Numba set-up for FFCV: OpenMP threads, and an on-disk JIT cache so each process and DDP rank
stops recompiling the same pipeline code (ffcv 1.0.2 compiles with `njit` and never caches).

`import ffcv` itself costs seconds (it compiles at import), so only the FFCV loader path calls
`import_ffcv()`; `import phiscale.data` stays free of it.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from phiscale.paths import cache_dir

# Debian's TBB makes numba pick TBB threads, ~1.7x slower for FFCV's decode loop than OpenMP.
THREADING_LAYER = "omp"


def set_threading_layer() -> None:
    """Prefer OpenMP threads unless the user chose a layer; must run before numba starts its threads."""
    os.environ.setdefault("NUMBA_THREADING_LAYER", THREADING_LAYER)
    numba = sys.modules.get("numba")
    if numba is not None and "NUMBA_THREADING_LAYER" not in os.environ:  # pragma: no cover
        numba.config.THREADING_LAYER = THREADING_LAYER


def enable_disk_cache() -> None:
    """Point numba's cache at `cache_dir('numba')` (unless NUMBA_CACHE_DIR is set)."""
    path = os.environ.setdefault("NUMBA_CACHE_DIR", str(cache_dir("numba")))
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.config.CACHE_DIR = path


def _cacheable(code) -> bool:
    """Numba caches functions defined in a real source file; FFCV's generated top-level pipeline
    function (built with `exec`) is not, and stays a plain (recompiled) njit."""
    try:
        return os.path.isfile(inspect.getfile(code))
    except TypeError:
        return False


def _named_by_content(dispatcher, signature, options: dict):
    """`dispatcher`, its uuid made from what it compiles (function, signature, options) instead of numba's
    random one. Numba's cache key of a function includes its closure's values pickled (numba/core/caching.py,
    `_index_key`), and a dispatcher pickles with its uuid (and the signatures it was built for, whose numba
    types pickle with a per-process counter): a function holding compiled helpers in its closure, as every
    FFCV decoder's `decode` does, missed the cache in every process and added one more entry to it. Named
    by content, the key is the same in every process; two dispatchers of one name compile the same thing,
    so numba's unpickling may take either."""
    import hashlib

    from numba.core.serialize import dumps

    digest = hashlib.sha256(dumps((dispatcher.py_func, str(signature), sorted(options.items())))).hexdigest()
    try:
        dispatcher._set_uuid(f"phiscale-{digest}")
    except AssertionError:  # already named (pickled or asked before): keep it
        pass
    return dispatcher


def _patch_ffcv_compiler(compiler_cls) -> None:
    """Make `ffcv.pipeline.compiler.Compiler.compile` pass `cache=True` to numba where it can, and its
    `set_num_threads` size numba's decode threads only, never torch's."""
    if getattr(compiler_cls, "_phiscale_cached", False):
        return
    from numba import njit

    def compile(cls, code, signature=None):  # mirrors ffcv 1.0.2's Compiler.compile
        if not cls.is_enabled:
            return code
        parallel = bool(getattr(code, "is_parallel", False)) and cls.num_threads > 1
        options = dict(fastmath=True, nogil=True, error_model="numpy", parallel=parallel)
        if hasattr(code, "py_func"):  # already a numba dispatcher
            return code
        # compiled at first call, for the types it is called with, not for `signature` now: a dispatcher built
        # for a signature pickles it, and numba's types pickle with a per-process counter (see _named_by_content)
        return _named_by_content(njit(cache=_cacheable(code), **options)(code), signature, options)

    def set_num_threads(cls, n):  # ffcv 1.0.2's also calls torch.set_num_threads(n) (compiler.py), and
        # its loader calls it from the EpochIterator thread each epoch: torch would get the loader's count
        import numba

        cls.num_threads = n if n >= 1 else os.cpu_count() or 1
        numba.set_num_threads(min(cls.num_threads, numba.config.NUMBA_NUM_THREADS))  # numba's: per thread

    compiler_cls.compile = classmethod(compile)
    compiler_cls.set_num_threads = classmethod(set_num_threads)
    compiler_cls._phiscale_cached = True


@contextmanager
def _plain_dict_for_image_modes() -> Iterator[None]:
    """`ffcv.fields.rgb_image` fills a numba typed Dict at import (`IMAGE_MODES`), which JIT-compiles
    numba's dict machinery: most of `import ffcv`'s seconds. FFCV only reads that dict from Python
    (ffcv 1.0.2: rgb_image.py lines 118, 170, 352), so a plain dict serves it the same."""
    import numba.typed

    if "ffcv.fields.rgb_image" in sys.modules:
        yield
        return
    typed_dict = numba.typed.Dict
    numba.typed.Dict = dict
    try:
        yield
    finally:
        numba.typed.Dict = typed_dict


@functools.cache
def import_ffcv() -> ModuleType:
    """Import ffcv with the numba set-up above; a missing install is a PhiscaleError with the fix."""
    from phiscale.errors import PhiscaleError

    set_threading_layer()
    enable_disk_cache()
    import torch

    threads = torch.get_num_threads()  # ffcv's Compiler sets torch's thread count to 1 at import
    try:
        with warnings.catch_warnings(), _plain_dict_for_image_modes():
            warnings.simplefilter("ignore")  # ffcv's import-time numba/numpy deprecation noise
            import ffcv
            import ffcv.pipeline.compiler
    except ImportError as err:
        raise PhiscaleError(
            f"FFCV is not importable ({err}): run scripts/setup.sh, or use data.loader=torch"
        ) from err
    finally:
        torch.set_num_threads(threads)
    _patch_ffcv_compiler(ffcv.pipeline.compiler.Compiler)
    from phiscale.data.libffcv_cached import use_in_ffcv_decoders

    use_in_ffcv_decoders()  # the decoders' stages cached too, not JIT-compiled in every process
    quiet_uncacheable_warnings()
    return ffcv


def quiet_uncacheable_warnings() -> None:
    """FFCV's decoders call libffcv through ctypes pointers, which numba cannot cache: expected, not news.
    (Called again per loader: pytest and `warnings.catch_warnings` reset the filters.)"""
    from numba.core.errors import NumbaWarning

    warnings.filterwarnings("ignore", message=r"Cannot cache compiled function", category=NumbaWarning)
