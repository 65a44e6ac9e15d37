"""`import phiscale.data` stays light: no ffcv, no numba (seconds of start-up) until a loader needs them."""

from __future__ import annotations


def test_importing_phiscale_data_does_not_import_ffcv_or_numba():
    import subprocess
    import sys

    code = "import sys, phiscale.data; print(sorted(m for m in ('ffcv', 'numba') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"`import phiscale.data` pulled in {out.strip()} (seconds of start-up)"
