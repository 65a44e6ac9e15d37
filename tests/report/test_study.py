"""The study's report: the search table (α, β, γ, product, MACs, top-1, pruned at), the scale curve and
its least-squares fit against ln MACs, the φ with the best top-1 per MAC, the epochs, the pictures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from phiscale.report.study import (
    PAPER_B0_B7,
    best_per_mac,
    fit_log_macs,
    scale_rows,
    search_rows,
    write_study,
)
from phiscale.sweeps.record import RecordPoint


def status(index: int, stage: str, state: str = "finished", *, params=None, macs=None, top1=None, tags=None):
    point = RecordPoint(index, index, None, [], [], f"/tmp/{index}", stage=stage)
    metrics = {k: v for k, v in (("model/macs_eval", macs), ("val/top1_best", top1)) if v is not None}
    run = SimpleNamespace(data=SimpleNamespace(params={"trainer.max_epochs": "4", **(params or {})}, metrics=metrics,
                                               tags=tags or {}), info=SimpleNamespace(run_id=f"r{index}"))
    return SimpleNamespace(point=point, state=state, run=run)


STATUSES = [
    status(0, "search", params={"model.alpha": "1.2", "model.beta": "1.1", "model.gamma": "1.15", "data.name": "imagenet"},
           macs=8e8, top1=0.79),
    status(1, "search", "pruned", params={"model.alpha": "1.4", "model.beta": "1.0", "model.gamma": "1.0"}, macs=6e8,
           top1=0.5, tags={"phiscale.pruned": "2"}),
    status(2, "scale", params={"model.phi": "0"}, macs=4e8, top1=0.77),
    status(3, "scale", params={"model.phi": "1"}, macs=8e8, top1=0.79),
    status(4, "scale", params={"model.phi": "2"}, macs=1.6e9, top1=0.81),
]


def test_the_search_table_has_the_coefficients_their_product_and_where_a_run_was_pruned():
    first, pruned = search_rows(STATUSES, winner_index=0)
    assert first["product"] == pytest.approx(1.2 * 1.1**2 * 1.15**2) and first["winner"]
    assert pruned["pruned_at"] == "2" and pruned["state"] == "pruned" and not pruned["winner"]


def test_the_fit_against_ln_macs_gives_top1_per_doubling_and_the_best_phi_per_mac():
    scale = scale_rows(STATUSES)
    slope, intercept = fit_log_macs(scale)
    assert slope * math.log(2) == pytest.approx(0.02), "every doubling of MACs gains 2 points here"
    assert intercept + slope * math.log(8e8) == pytest.approx(0.79)
    assert best_per_mac(scale)["phi"] == 0.0
    assert fit_log_macs(scale[:1]) is None, "one point has no slope"


def test_the_study_section_states_the_epochs_and_writes_its_pictures(tmp_path):
    record = SimpleNamespace(id="s-1", stopped=None, epochs=None, winner={
        "index": 0, "overrides": ["model.alpha=1.2"], "metric": "val/top1_best", "value": 0.79, "how": "max"})
    section, files = write_study(record, STATUSES, tmp_path)
    assert [f.name for f in files] == ["study_search.csv", "study_search.png", "study_scale.png"]
    assert all(f.stat().st_size > 0 for f in files)
    assert "Epochs: 18 spent of the full grid's 20 (90%)." in section, "the pruned run spent 2 of its 4"
    assert "| 1 | 1.4 | 1 | 1 | 1.400 | 6e+08 | 0.5000 | 2 | pruned |" in section
    assert "slope 0.0289 per e-fold of MACs, 0.0200 per doubling" in section
    assert "Best top-1 per MAC: φ = 0" in section
    assert len(PAPER_B0_B7) == 8 and PAPER_B0_B7[0] == ("B0", 0.771, 0.39e9)  # Tan & Le 2019, Table 2
