"""The report's figures: MACs expected from d·w²·r² against the anchor run, error bars over seeds."""

from __future__ import annotations

import pytest
from support.report import row

from phiscale.report.plots import PLOT_TOP1_VS_MACS, expected_macs_ratio, write_plots


def test_macs_expected_from_d_w_r_relative_to_the_anchor():
    anchor = row("phi0")
    one = row("phi1", depth_mult=1.2, width_mult=1.1, resolution_mult=1.15)
    assert expected_macs_ratio(one, anchor) == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    assert expected_macs_ratio(row("preset", depth_mult=None), anchor) is None


def test_error_bars_are_drawn_for_rows_over_several_seeds(tmp_path):
    """The same rows with and without a spread over seeds: the PNGs differ (bars around the markers)."""
    import numpy as np
    from PIL import Image

    spread = [row("p0", top1=0.9, top1_std=0.03, runs=3), row("p1", macs=4e6, top1=0.95, top1_std=0.02, runs=3)]
    single = [row("p0", top1=0.9), row("p1", macs=4e6, top1=0.95)]
    for name, rows in (("spread", spread), ("single", single)):
        (tmp_path / name).mkdir()
        write_plots(rows, tmp_path / name)
    with_bars, without = (np.asarray(Image.open(tmp_path / n / PLOT_TOP1_VS_MACS).convert("L"), dtype=np.int16)
                          for n in ("spread", "single"))
    assert with_bars.shape == without.shape and (np.abs(with_bars - without) > 40).sum() > 100
