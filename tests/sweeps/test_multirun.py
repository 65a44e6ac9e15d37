"""A Hydra multirun over a sweep file: which of its runs it trains and which overrides it adds, from
its command line. The callback itself runs in tests/end_to_end/test_sweep_then_report.py."""

from __future__ import annotations

import pytest

from phiscale.errors import PhiscaleError
from phiscale.sweeps.multirun import multirun_plan


@pytest.mark.parametrize(("task", "indices"), [
    (["sweep.file=s.yaml", "sweep.index=range(0,3)"], [0, 1, 2]),
    (["sweep.file=s.yaml", "sweep.index=4,1"], [1, 4]),
    (["sweep.file=s.yaml", "sweep.index=2"], [2]),
    (["sweep.file=s.yaml"], [0, 1, 2, 3, 4]),
])  # fmt: skip
def test_the_indices_a_multirun_trains(task, indices):
    assert multirun_plan(task, 5)[0] == indices


def test_the_other_overrides_are_the_sweeps_extra():
    _, extra = multirun_plan(["sweep.file=s.yaml", "sweep.index=range(0,2)", "trainer.max_epochs=1",
                              "+tag=x", "tracking.uri=sqlite:///a.db"], 2)
    assert extra == ["trainer.max_epochs=1", "+tag=x", "tracking.uri=sqlite:///a.db"]


def test_other_axes_and_indices_outside_the_sweep_are_refused():
    with pytest.raises(PhiscaleError, match="sweeps sweep.index only, not seed=0,1: put that axis in the sweep file"):
        multirun_plan(["sweep.file=s.yaml", "sweep.index=range(0,2)", "seed=0,1"], 2)
    with pytest.raises(PhiscaleError, match=r"sweep.index values \[5\] are outside the sweep's 0…4"):
        multirun_plan(["sweep.index=3,5"], 5)
