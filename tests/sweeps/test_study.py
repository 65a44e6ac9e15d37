"""Two-stage sweep files: the shipped studies load, their runs are numbered through both stages, and a
malformed study is refused in one line naming the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from phiscale.errors import PhiscaleError
from phiscale.sweeps.pruning import EarlyStop
from phiscale.sweeps.study import load_study

ROOT = Path(__file__).resolve().parents[2]
STUDY = """name: tiny
base: [data=digits, trainer.max_epochs=2]
stages:
  search:
    base: [model.phi=1]
    grid: {model.alpha: [1.0, 1.2]}
    seeds: [0, 1]
    early_stop: {metric: val/loss, rungs: [1]}
  scale:
    from: search
    grid: {model.phi: [0, 0.5, 1]}
"""


def test_the_shipped_digits_study_has_four_search_points_then_two_scale_points():
    study = load_study(ROOT / "sweeps" / "compound_digits.yaml")
    search, scale = study.stages
    assert study.two_stage and len(study) == 6 and [s.name for s in study.stages] == ["search", "scale"]
    assert study.indices(search) == [0, 1, 2, 3] and study.indices(scale) == [4, 5]
    assert search.early_stop == EarlyStop("val/loss", "min", (1,), 2) and search.select == ("val/top1_best", "max")
    assert scale.source == "search" and scale.early_stop is None
    assert study.overrides(5)[-1] == "model.phi=0.5" and "data=digits" in study.overrides(5)
    assert "model.phi=1" in study.overrides(0) and "model.phi=1" not in study.overrides(4)


def test_the_shipped_imagenet_study_searches_around_the_papers_coefficients():
    study = load_study(ROOT / "sweeps" / "compound.yaml")
    search, scale = study.stages
    points = {" ".join(p) for p in search.sweep.points}
    assert "model.alpha=1.2 model.beta=1.1 model.gamma=1.15" in points  # Tan & Le 2019, §4
    assert search.early_stop.rungs == (10, 30, 90) and len(scale.sweep) == 8
    assert "experiment=imagenet_efficientnet" in study.overrides(0)


def test_runs_are_numbered_through_the_stages_with_seeds(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(STUDY)
    study = load_study(path)
    assert len(study) == 4 + 3
    assert [study.seed_of(i) for i in range(4)] == [0, 1, 0, 1] and study.seed_of(4) is None
    assert [study.point_of(i) for i in range(7)] == [0, 0, 1, 1, 2, 3, 4]
    assert study.own_overrides(3) == ["model.alpha=1.2", "seed=1"]
    assert study.locate(6)[0].name == "scale" and study.locate(6)[1] == 2


def test_a_plain_sweep_file_is_a_study_of_one_unnamed_stage():
    study = load_study(ROOT / "sweeps" / "phi.yaml")
    assert not study.two_stage and [s.name for s in study.stages] == [None]
    assert len(study) == len(study.stages[0].sweep)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda t: t.replace("    from: search\n", ""), "stages.scale: from: must be `search`"),
    (lambda t: t.replace("  scale:", "  grow:"), "stages must be exactly `search:` then `scale:`"),
    (lambda t: t + "grid: {model.phi: [1]}\n", "unknown key(s) ['grid'] beside stages:"),
    (lambda t: t.replace("    from: search\n", "    from: search\n    select: {metric: val/top1}\n"),
     "stages.scale: select: picks the search's winner"),
    (lambda t: t.replace("rungs: [1]", "rungs: [1], eta: 0.5"), "stages.search: early_stop eta 0.5 must be"),
    (lambda t: t.replace("    seeds: [0, 1]\n", "    patience: 3\n"), "stages.search: unknown key(s) ['patience']"),
])
def test_a_malformed_study_is_refused_in_one_line(tmp_path, edit, says):
    path = tmp_path / "bad.yaml"
    path.write_text(edit(STUDY))
    with pytest.raises(PhiscaleError) as err:
        load_study(path)
    assert says in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
