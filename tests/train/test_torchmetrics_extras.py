"""torchmetrics without its extras: a phiscale process imports Lightning without scipy.signal and
matplotlib, and everything it uses of torchmetrics still works; scipy stays importable."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import phiscale
import lightning.pytorch
import torch
from torchmetrics.aggregation import MeanMetric
from phiscale.train.torchmetrics_extras import SkipTorchmetricsExtras
from lightning_utilities.core.imports import package_available

mean = MeanMetric()
mean.update(torch.tensor([1.0, 3.0]))
print("left out:", sorted(m for m in ("scipy.signal", "matplotlib") if m not in sys.modules))
print("mean:", float(mean.compute()))
print("finder gone:", not any(isinstance(f, SkipTorchmetricsExtras) for f in sys.meta_path))
print("scipy answered truly:", package_available("scipy"))
import scipy.signal
print("scipy.signal imports:", hasattr(scipy.signal, "windows"))
"""


def run(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_lightning_comes_without_scipy_signal_and_matplotlib_and_metrics_still_work():
    assert run(PROBE) == [
        "left out: ['matplotlib', 'scipy.signal']",
        "mean: 2.0",
        "finder gone: True",
        "scipy answered truly: True",
        "scipy.signal imports: True",
    ]


def test_a_torchmetrics_imported_before_phiscale_is_left_as_it_is():
    lines = run("import sys, torchmetrics, phiscale\n"
                "from phiscale.train.torchmetrics_extras import SkipTorchmetricsExtras\n"
                "print(any(isinstance(f, SkipTorchmetricsExtras) for f in sys.meta_path), 'scipy.signal' in sys.modules)")
    assert lines == ["False True"], "nothing to skip once torchmetrics is in: no finder left behind"
