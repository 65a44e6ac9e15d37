"""torchmetrics without its optional extras: the seconds of a run's start-up that no phiscale process uses.

Lightning imports torchmetrics (its Metric type), and torchmetrics imports on import whatever optional
package is installed: `scipy.signal` (a patch kept for a speech-metrics package) and matplotlib (its
`Metric.plot`). Both are installed here (scikit-learn brings scipy, the report uses matplotlib), and
together they are over a quarter of importing Lightning: 4.8 s of CPU with them, 3.5 s without, on a loaded
2-core machine (issue 31; `python -X importtime -c "import phiscale, lightning.pytorch"` shows it).
`skip_torchmetrics_extras` makes a process's coming torchmetrics import treat them as absent;
phiscale logs no torchmetrics metric, so nothing changes but the time (a `Metric.plot` would say
that matplotlib is missing). Imports nothing of phiscale.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

# torchmetrics.utilities.imports' flags whose truth makes a torchmetrics module import the extra at its top
# (torchmetrics/functional/audio/__init__.py and audio/__init__.py: scipy.signal; utilities/plot.py: matplotlib).
EXTRA_FLAGS = ("_SCIPI_AVAILABLE", "_MATPLOTLIB_AVAILABLE")
# torchmetrics/__init__.py asks `package_available("scipy")` (lightning_utilities, cached) before the flags exist.
EXTRA_PACKAGE = "scipy"


class _AroundExec:
    """A module's own loader, with a call before and after it runs the module (importlib's loader
    protocol; not importlib.abc's classes, whose import costs every phiscale command 25 ms)."""

    def __init__(self, loader: Any, before, after) -> None:
        self.loader, self.before, self.after = loader, before, after

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.before()
        try:
            self.loader.exec_module(module)
        finally:
            self.after(module)

    def __getattr__(self, name: str) -> Any:  # resources, source, code: the real loader's
        return getattr(self.loader, name)


class SkipTorchmetricsExtras:
    """A finder on sys.meta_path until torchmetrics is imported; then it takes itself off."""

    def __init__(self) -> None:
        self._hiding_in: int | None = None  # the thread for which scipy is absent, for one question

    def find_spec(self, name: str, path=None, target=None):
        if name == EXTRA_PACKAGE and self._hiding_in == threading.get_ident():
            raise ModuleNotFoundError(f"{name} is left out of torchmetrics' import (phiscale)", name=name)
        if name not in ("torchmetrics", "torchmetrics.utilities.imports"):
            return None
        spec = _real_spec(self, name, path, target)
        if spec is None or spec.loader is None:
            return spec
        if name == "torchmetrics":
            spec.loader = _AroundExec(spec.loader, self._answer_no_scipy, self._done)
        else:
            spec.loader = _AroundExec(spec.loader, lambda: None, _flags_false)
        return spec

    def _answer_no_scipy(self) -> None:
        """Make torchmetrics' cached `package_available("scipy")` False (scipy itself stays importable)."""
        if EXTRA_PACKAGE in sys.modules:  # imported already: find_spec answers from sys.modules, not finders
            return
        from lightning_utilities.core.imports import package_available

        self._hiding_in = threading.get_ident()
        try:
            package_available(EXTRA_PACKAGE)
        finally:
            self._hiding_in = None

    def _done(self, module) -> None:
        from lightning_utilities.core.imports import package_available

        package_available.cache_clear()  # any later question gets the truth
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def _real_spec(finder: SkipTorchmetricsExtras, name: str, path, target):
    for other in list(sys.meta_path):
        if other is finder or not hasattr(other, "find_spec"):
            continue
        spec = other.find_spec(name, path, target)
        if spec is not None:
            return spec
    return None


def _flags_false(module) -> None:
    for flag in EXTRA_FLAGS:
        cache = getattr(module, flag, None)
        if cache is not None and hasattr(cache, "_check_available"):  # lightning_utilities' RequirementCache
            cache.available = False
            cache.message = f"{getattr(cache, 'requirement', flag)} is left out of torchmetrics' import by phiscale"


def skip_torchmetrics_extras() -> None:
    """Before torchmetrics is imported (Lightning imports it), make its import leave the extras out;
    a no-op once it is imported, or when asked twice."""
    if "torchmetrics" in sys.modules or any(isinstance(f, SkipTorchmetricsExtras) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, SkipTorchmetricsExtras())
