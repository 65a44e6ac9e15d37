"""Runs become rows: a missing experiment or store is named, the Pareto front's definition, a point's
seeds merged into one row, the augmentation column."""

from __future__ import annotations

import pytest
from support.report import row

from phiscale.errors import PhiscaleError
from phiscale.report.build import make_report
from phiscale.report.rows import aug_summary, group_seeds, pareto_flags


def test_missing_experiment_and_empty_experiment_are_named(sqlite_store, tmp_path):
    uri = sqlite_store
    with pytest.raises(PhiscaleError, match=r"experiment 'nope' not found .*existing: .*empty"):
        make_report("nope", tracking_uri=uri, out_dir=tmp_path / "r")
    with pytest.raises(PhiscaleError, match="'empty' .* has no training runs"):
        make_report("empty", tracking_uri=uri, out_dir=tmp_path / "r")


def test_an_absent_store_is_named_not_created(tmp_path):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(PhiscaleError, match="no MLflow database at .*none.db"):
        make_report("x", tracking_uri=missing)
    assert not (tmp_path / "none.db").exists(), "the report must not create an empty store"


def test_pareto_front_definition():
    # (MACs, top-1): equal points are both on the front; a point needs both values.
    points = [(1, 0.5), (2, 0.5), (2, 0.7), (3, 0.6), (3, 0.9), (3, 0.9), (None, 0.99), (4, None)]
    assert pareto_flags(points) == [True, False, True, False, True, True, False, False]


def test_seeds_of_a_point_merge_and_other_runs_stay_rows():
    rows = [row("a", sweep="s1", sweep_point=0, seeds="0", top1=0.8), row("b", sweep="s1", sweep_point=0, seeds="1",
            top1=0.9, status="RUNNING"), row("c", sweep="s2", sweep_point=0, seeds="0"), row("d")]
    merged = {r.run_name: r for r in group_seeds(rows)}
    assert set(merged) == {"a", "c", "d"}, "s1's point 0 is one row; another sweep's point 0 is not in it"
    a = merged["a"]
    assert (a.run_id, a.runs, a.seeds, a.status) == ("a,b", 2, "0,1", "RUNNING")
    assert a.top1 == pytest.approx(0.85) and a.top1_std == pytest.approx(0.0707107, rel=1e-5)
    assert a.device_hours == 2.0 and merged["d"].runs == 1 and merged["d"].top1_std is None


@pytest.mark.parametrize(("params", "text"), [
    ({}, "none"),
    ({"aug.policy": "none", "aug.mixup": "0.0", "aug.cutmix": "0", "aug.erasing": "0.0"}, "none"),
    ({"aug.policy": "autoaugment"}, "autoaugment"),
    ({"aug.policy": "randaugment", "aug.num_ops": "2", "aug.magnitude": "9", "aug.mixup": "0.2",
      "aug.erasing": "0.25"}, "randaugment n2 m9, mixup 0.2, erasing 0.25"),
    ({"aug.cutmix": "1.0", "aug.mix_prob": "1.0"}, "cutmix 1.0"),
])  # fmt: skip
def test_the_augmentation_column_names_what_is_on(params, text):
    assert aug_summary(params) == text
