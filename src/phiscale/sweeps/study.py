"""A two-stage study in one sweep file: search α, β, γ at φ=1 (with early stopping), then scale the winner.

The EfficientNet paper's method (Tan & Le 2019, arXiv 1905.11946, §3.3): step 1 fixes φ = 1 and
grid-searches α, β, γ under α·β²·γ² ≈ 2; step 2 fixes them and scales up with φ. As a file:

    name: compound_digits
    base: [data=digits, model=efficientnet, trainer.max_epochs=6]     # shared by both stages
    stages:
      search:
        base: [model.phi=1]
        grid: {model.alpha: [1.0, 1.2, 1.4], model.beta: [1.0, 1.1, 1.2], model.gamma: [1.0, 1.15, 1.3]}
        constraint: {product: {model.alpha: 1, model.beta: 2, model.gamma: 2}, target: 2.0, rel_tol: 0.1}
        early_stop: {metric: val/loss, mode: min, rungs: [2, 4], eta: 3}     # sweeps/pruning.py
        select: {metric: val/top1_best, mode: max}                          # the winner; ties: fewer MACs
      scale:
        from: search          # every run gets the winner's model.alpha, model.beta, model.gamma
        grid: {model.phi: [0, 0.5, 1, 1.5]}

A stage is a sweep (base, points, grid, constraint, seeds, tags) plus `early_stop:` and, for the
search, `select:`. The study's runs are numbered through: the search's first (0 … S-1), then the
scale's. A plain sweep file is a study of one unnamed stage, so every sweep goes the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phiscale.errors import PhiscaleError
from phiscale.sweeps.file import _NAME, Sweep, _as_assignments, _format_value, parse_sweep, read_mapping
from phiscale.sweeps.pruning import MODES, EarlyStop, parse_early_stop

STAGES = ("search", "scale")  # in the order they run
STUDY_KEYS = ("name", "description", "base", "tags", "stages")
STAGE_KEYS = ("base", "points", "grid", "constraint", "seeds", "early_stop", "select", "from")
CARRIED = ("model.alpha", "model.beta", "model.gamma")  # what `from: search` takes from the winner
DEFAULT_SELECT = ("val/top1_best", "max")


@dataclass(frozen=True)
class Stage:
    """One stage of a study: its runs (a Sweep), its early stopping, and (search) how its winner is picked."""

    name: str | None  # "search", "scale"; None: a plain sweep file's only stage
    sweep: Sweep
    early_stop: EarlyStop | None = None
    select: tuple[str, str] | None = None  # (metric, mode) of the search
    source: str | None = None  # `from:` the stage whose winner it scales

    def describe(self, indices: Sequence[int]) -> dict[str, Any]:
        """The stage as the record keeps it."""
        rule = self.early_stop
        return {"name": self.name, "indices": list(indices), "from": self.source,
                "select": {"metric": self.select[0], "mode": self.select[1]} if self.select else None,
                "early_stop": None if rule is None else {"metric": rule.metric, "mode": rule.mode,
                                                         "rungs": list(rule.rungs), "eta": rule.eta}}


@dataclass(frozen=True)
class Study:
    """A sweep file's stages; it answers what a Sweep answers for the runs numbered through the stages."""

    name: str
    path: Path
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(s.sweep) for s in self.stages)

    @property
    def two_stage(self) -> bool:
        return any(s.name for s in self.stages)

    def indices(self, stage: Stage) -> list[int]:
        first = sum(len(s.sweep) for s in self.stages[: self.stages.index(stage)])
        return list(range(first, first + len(stage.sweep)))

    def locate(self, index: int) -> tuple[Stage, int, int]:
        """(stage, index within it, points before it) of run `index` of the study."""
        before = points = 0
        for stage in self.stages:
            if index < before + len(stage.sweep):
                return stage, index - before, points
            before, points = before + len(stage.sweep), points + len(stage.sweep.points)
        raise PhiscaleError(f"{self.path}: run {index} is out of range ({len(self)} runs): pick 0…{len(self) - 1}")

    # What record.create_record asks of a sweep.
    @property
    def base(self) -> list[str]:
        return [o for s in self.stages for o in s.sweep.base]

    @property
    def points(self) -> list[list[str]]:
        return [p for s in self.stages for p in s.sweep.points]

    def point_of(self, index: int) -> int:
        stage, local, points = self.locate(index)
        return points + stage.sweep.point_of(local)

    def seed_of(self, index: int) -> int | None:
        stage, local, _ = self.locate(index)
        return stage.sweep.seed_of(local)

    def overrides(self, index: int) -> list[str]:
        stage, local, _ = self.locate(index)
        return stage.sweep.overrides(local)

    def own_overrides(self, index: int) -> list[str]:
        stage, local, _ = self.locate(index)
        return stage.sweep.own_overrides(local)

    def own_tags(self, index: int) -> dict[str, str]:
        stage, local, _ = self.locate(index)
        return stage.sweep.own_tags(local)


def load_study(path: str | Path) -> Study:
    """A sweep file as a study: its `stages:`, or (a plain sweep file) one unnamed stage."""
    from phiscale.sweeps.file import load_sweep

    path = Path(path)
    raw = read_mapping(path)
    if "stages" not in raw:
        sweep = load_sweep(path)
        return Study(sweep.name, path, sweep.description, dict(sweep.tags), [Stage(None, sweep)])
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise PhiscaleError(f"{path}: unknown key(s) {unknown} beside stages:; allowed: {', '.join(STUDY_KEYS)} "
                            "(points and grids go into a stage)")
    name = str(raw.get("name") or path.stem)
    if not _NAME.match(name):
        raise PhiscaleError(f"{path}: name {name!r} must be letters, digits, '_', '-' or '.' (it becomes a tag)")
    stages_raw = raw["stages"]
    if not isinstance(stages_raw, dict) or list(stages_raw) != list(STAGES):
        got = list(stages_raw) if isinstance(stages_raw, dict) else stages_raw
        raise PhiscaleError(f"{path}: stages must be exactly `search:` then `scale:`, got {got!r}")
    shared = _base_list(raw.get("base"), f"{path}: base")
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict):
        raise PhiscaleError(f"{path}: tags must be a mapping like {{purpose: step1}}, got {tags!r}")
    stages = [_stage(stage_name, stages_raw[stage_name], shared, name, path) for stage_name in STAGES]
    return Study(name, path, str(raw.get("description") or "").strip(), {str(k): str(v) for k, v in tags.items()},
                 stages)


def stage_record(record: Any, study: Study) -> None:
    """Mark a new record's runs with their stage and keep the stages (a one-stage sweep: nothing to do)."""
    if not study.two_stage:
        return
    for point in record.points:
        point.stage = study.locate(point.index)[0].name
    record.stages = [stage.describe(study.indices(stage)) for stage in study.stages]
    record.save()


def _stage(stage_name: str, raw: Any, shared: list[str], study: str, path: Path) -> Stage:
    where = f"{path}: stages.{stage_name}"
    if not isinstance(raw, dict):
        raise PhiscaleError(f"{where} must be a mapping with grid: and/or points:, got {raw!r}")
    own = {k: v for k, v in raw.items() if k not in ("early_stop", "select", "from")}
    own["base"] = [*shared, *_base_list(raw.get("base"), f"{where}: base")]
    own["name"] = study
    sweep = parse_sweep(own, path, where=where, allowed=(*STAGE_KEYS, "name"))
    source = raw.get("from")
    if stage_name == "scale" and source != "search":
        raise PhiscaleError(f"{where}: from: must be `search` (the stage whose winner's "
                            f"{', '.join(CARRIED)} it scales), got {source!r}")
    if stage_name == "search" and source is not None:
        raise PhiscaleError(f"{where}: from: {source!r} belongs in the scale stage; drop it here")
    select = None
    if stage_name == "search":
        picked = raw.get("select") or {}
        if not isinstance(picked, dict) or set(picked) - {"metric", "mode"}:
            raise PhiscaleError(f"{where}: select must be like {{metric: val/top1_best, mode: max}}, got {picked!r}")
        select = (str(picked.get("metric", DEFAULT_SELECT[0])), str(picked.get("mode", DEFAULT_SELECT[1])))
        if select[1] not in MODES:
            raise PhiscaleError(f"{where}: select mode {select[1]!r} is not one of {', '.join(MODES)}")
    elif raw.get("select") is not None:
        raise PhiscaleError(f"{where}: select: picks the search's winner; move it to stages.search")
    return Stage(stage_name, sweep, parse_early_stop(raw.get("early_stop"), where), select, source)


def _base_list(value: Any, where: str) -> list[str]:
    """A `base:` as override strings (a list of 'key=value', or a mapping)."""
    return [f"{key}={_format_value(val)}" for key, val in _as_assignments(value, where).items()]
