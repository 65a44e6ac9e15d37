"""The ASHA rule on recorded values: first arrival, ties, η, rungs, modes, and the config it reads."""

from __future__ import annotations

import math

import pytest

from phiscale.errors import PhiscaleError
from phiscale.sweeps.pruning import EarlyStop, judge, parse_early_stop


def test_the_first_run_at_a_rung_continues_whatever_its_value():
    assert judge(9.9, [], rung=2, mode="min", eta=3).keep
    assert judge(float("nan"), [], rung=2, mode="min", eta=3).keep


def test_a_later_run_continues_only_within_the_best_third_of_the_values_so_far():
    recorded = [0.5, 0.6]  # two runs before; this one makes three: ⌈3/3⌉ = 1 may continue
    assert judge(0.4, recorded, rung=2, mode="min", eta=3).keep
    assert not judge(0.55, recorded, rung=2, mode="min", eta=3).keep
    # Four values: ⌈4/3⌉ = 2 continue, so the second best does too.
    assert judge(0.55, [0.5, 0.6, 0.7], rung=2, mode="min", eta=3).keep
    assert not judge(0.65, [0.5, 0.6, 0.7], rung=2, mode="min", eta=3).keep


def test_eta_sets_the_fraction_that_continues():
    recorded = [0.1, 0.2, 0.3]  # n = 4 with the run's own 0.25: two values beat it
    assert judge(0.25, recorded, rung=1, mode="min", eta=1.5).keep  # ⌈4/1.5⌉ = 3
    assert not judge(0.25, recorded, rung=1, mode="min", eta=2).keep  # ⌈4/2⌉ = 2
    assert not judge(0.25, recorded, rung=1, mode="min", eta=4).keep  # ⌈4/4⌉ = 1


def test_max_mode_prefers_high_values():
    assert judge(0.9, [0.5, 0.6], rung=4, mode="max", eta=3).keep
    assert not judge(0.5, [0.9, 0.6], rung=4, mode="max", eta=3).keep


def test_ties_get_one_verdict_whatever_the_order_of_arrival():
    # Three equal values: none is strictly better than another, so each continues, first or last.
    for order in ([0.5, 0.5], [0.5], []):
        assert judge(0.5, order, rung=2, mode="min", eta=3).keep
    # A tie with the best continues; a tie with a pruned value is pruned like it.
    assert judge(0.3, [0.3, 0.9, 0.9], rung=2, mode="max", eta=3).better == 2
    assert not judge(0.3, [0.3, 0.9, 0.9], rung=2, mode="max", eta=3).keep


def test_nan_is_worse_than_any_number():
    verdict = judge(float("nan"), [1.0, 2.0], rung=2, mode="min", eta=2)
    assert not verdict.keep and verdict.better == 2
    assert judge(5.0, [float("nan"), float("nan")], rung=2, mode="min", eta=3).keep


def test_the_verdict_says_what_it_saw_in_one_line():
    line = judge(0.8, [0.2, 0.3], rung=2, mode="min", eta=3).line("val/loss")
    assert line == "rung 2: val/loss=0.8, 2 of 3 values at this rung are better (the best 1 continue) -> is pruned"
    assert math.isclose(judge(0.8, [], rung=4, mode="min", eta=3).value, 0.8)


def test_a_stage_early_stop_parses_and_becomes_the_runs_overrides():
    rule = parse_early_stop({"metric": "val/loss", "mode": "min", "rungs": [2, 4], "eta": 3}, "f.yaml: search")
    assert rule == EarlyStop("val/loss", "min", (2, 4), 3)
    assert rule.overrides() == ["sweep.early_stop.metric=val/loss", "sweep.early_stop.mode=min",
                                "sweep.early_stop.rungs=[2,4]", "sweep.early_stop.eta=3"]
    assert parse_early_stop(None, "x") is None


@pytest.mark.parametrize(("value", "says"), [
    ({"metric": "val/loss", "rungs": [2], "mode": "lowest"}, "mode 'lowest' is not one of min, max"),
    ({"metric": "val/loss", "rungs": [0]}, "rungs [0] must be epoch counts >= 1"),
    ({"metric": "val/loss", "rungs": [4, 2]}, "rungs [4, 2] must increase"),
    ({"metric": "val/loss", "rungs": [2], "eta": 1}, "eta 1 must be a number > 1"),
    ({"metric": "val/loss", "rungs": [2], "patience": 3}, "unknown key(s) ['patience']"),
    ({"metric": "val/loss"}, "early_stop needs at least metric and rungs"),
])
def test_a_bad_early_stop_is_refused_in_one_line_naming_the_value(value, says):
    with pytest.raises(PhiscaleError, match="^f.yaml: search: ") as err:
        parse_early_stop(value, "f.yaml: search")
    assert says in str(err.value) and "\n" not in str(err.value)
