"""The early-stopping rule of a sweep's stage: asynchronous successive halving (ASHA).

Li et al. 2020, "A System for Massively Parallel Hyperparameter Tuning" (arXiv 1810.05934), the rule
Ray Tune's ASHAScheduler applies as a stopping rule: at a rung (an epoch count), a run continues only
if its value is among the best 1/η of the values its stage's runs recorded at that rung, its own
included. Runs arrive at a rung one by one and nobody waits: the first to arrive always continues, a
later one is judged against those before it. With n values (its own among them) a run continues iff
fewer than ⌈n/η⌉ values are strictly better than its own; equal values get the same verdict whatever
order they came in, and a NaN is worse than any number. Missing data (MLflow unreachable) never
prunes: the run continues. Pure: no MLflow, no Lightning (train/early_stop.py asks it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from phiscale.errors import PhiscaleError

MODES = ("min", "max")
PRUNED_TAG = "phiscale.pruned"  # on a run stopped by the rule: the rung (epochs) it stopped at
RUNG_PREFIX = "rung"  # a run logs its value at rung r as `rung/<r>/<metric>` (read back by its stage's runs)
KEYS = ("metric", "mode", "rungs", "eta")  # a stage's `early_stop:` mapping


@dataclass(frozen=True)
class EarlyStop:
    """A stage's `early_stop:`: the metric and its direction, the rung epochs, the reduction factor η."""

    metric: str
    mode: str = "min"
    rungs: tuple[int, ...] = ()
    eta: float = 3.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PhiscaleError(f"early_stop mode {self.mode!r} is not one of {', '.join(MODES)}: "
                                "min for a loss, max for an accuracy")
        if not self.rungs or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in self.rungs):
            raise PhiscaleError(f"early_stop rungs {list(self.rungs)!r} must be epoch counts >= 1, e.g. [2, 4]")
        if list(self.rungs) != sorted(set(self.rungs)):
            raise PhiscaleError(f"early_stop rungs {list(self.rungs)!r} must increase, each once, e.g. [2, 4]")
        if isinstance(self.eta, bool) or not isinstance(self.eta, int | float) or not self.eta > 1:
            raise PhiscaleError(f"early_stop eta {self.eta!r} must be a number > 1 (3 keeps the best third)")

    def overrides(self, prefix: str = "sweep.early_stop") -> list[str]:
        """What a run of the stage is handed (conf/train.yaml's `sweep.early_stop`)."""
        rungs = "[" + ",".join(map(str, self.rungs)) + "]"
        return [f"{prefix}.metric={self.metric}", f"{prefix}.mode={self.mode}", f"{prefix}.rungs={rungs}",
                f"{prefix}.eta={self.eta:g}"]


def rung_key(metric: str, rung: int) -> str:
    """The MLflow metric holding a run's `metric` at rung `rung` (one search_runs call reads a stage's)."""
    return f"{RUNG_PREFIX}/{rung}/{metric}"


def parse_early_stop(value: object, where: str) -> EarlyStop | None:
    """A stage's `early_stop: {metric: val/loss, mode: min, rungs: [2, 4], eta: 3}` (None: absent)."""
    if value is None:
        return None
    example = "e.g. early_stop: {metric: val/loss, mode: min, rungs: [2, 4], eta: 3}"
    if not isinstance(value, dict) or "metric" not in value or "rungs" not in value:
        raise PhiscaleError(f"{where}: early_stop needs at least metric and rungs, {example}; got {value!r}")
    unknown = sorted(set(value) - set(KEYS))
    if unknown:
        raise PhiscaleError(f"{where}: early_stop has unknown key(s) {unknown}; allowed: {', '.join(KEYS)}")
    rungs = value["rungs"]
    if not isinstance(rungs, list):
        raise PhiscaleError(f"{where}: early_stop rungs must be a list of epochs, {example}; got {rungs!r}")
    try:
        return EarlyStop(str(value["metric"]), str(value.get("mode", "min")), tuple(rungs), value.get("eta", 3))
    except PhiscaleError as err:
        raise PhiscaleError(f"{where}: {err}") from None


@dataclass(frozen=True)
class Verdict:
    """What the rule says at one rung, and from which values (for the run's log line)."""

    keep: bool
    rung: int
    value: float
    better: int  # values strictly better than the run's own
    allowed: int  # ⌈n/η⌉ (at least 1): the run continues iff fewer than this many values beat it
    n: int  # values at the rung, the run's own included

    def line(self, metric: str) -> str:
        verdict = "continues" if self.keep else "is pruned"
        return (f"rung {self.rung}: {metric}={self.value:.4g}, {self.better} of {self.n} values at this rung are "
                f"better (the best {self.allowed} continue) -> {verdict}")


def is_better(a: float, b: float, mode: str) -> bool:
    """a strictly better than b; NaN is worse than every number and equal to NaN."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a < b if mode == "min" else a > b


def judge(own: float, others: Iterable[float], *, rung: int, mode: str, eta: float) -> Verdict:
    """ASHA at one rung: `own` against `others` (the values the stage's other runs recorded there)."""
    if mode not in MODES:
        raise PhiscaleError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    values: Sequence[float] = [float(v) for v in others]
    n = len(values) + 1
    allowed = max(1, math.ceil(n / eta - 1e-12))
    better = sum(is_better(v, own, mode) for v in values)
    return Verdict(better < allowed, rung, float(own), better, allowed, n)
