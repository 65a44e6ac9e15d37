"""Sweep files: one YAML lists the points of a sweep; the SLURM array and Hydra multirun both index it.

A sweep file (sweeps/*.yaml) holds:

    name: abg_grid                  # default: the file name; runs are tagged sweep=<name>
    description: one line for the listing
    base: [model=efficientnet, model.phi=1]     # overrides shared by every point
    tags: {purpose: step1}          # extra MLflow tags for every run (optional)
    points:                         # explicit points (optional), a mapping or override strings
      - {model: efficientnet_b0}
      - [model=mobilenet_v2, model.width_mult=0.5]
    grid:                           # cartesian product of the axes (optional; a list = several grids)
      model.alpha: [1.0, 1.1, 1.2]
      model.beta: {start: 1.0, stop: 1.2, step: 0.05}     # a range, stop included
    series:                         # scaling series at shared FLOPs levels (optional; sweeps/series.py)
      depth: {model.alpha: 2, model.beta: 1, model.gamma: 1}
    levels: [0, 1, 2]               # the φ of every series
    constraint:                     # keep the points whose product lies in the window (optional)
      product: {model.alpha: 1, model.beta: 2, model.gamma: 2}
      target: 2.0
      rel_tol: 0.05
    seeds: [0, 1, 2]                # repeat every point once per seed (optional)

The points are numbered P = 0, 1, … (explicit points first, then the grids in order, the last axis
varying fastest, then the series, each at its levels). A run of the sweep is a point and a seed: with S seeds, run index I is point
I // S with seed seeds[I % S] (the seeds of a point are consecutive), so a sweep has P·S runs;
without `seeds:` a run is a point (I = P) and its seed is the config's. Run I composes
`base + point (+ seed=<seed>)`, a list of Hydra override strings (a key set twice: the later one
wins, as in Hydra); the train app appends the command line's own overrides after them:

    phiscale-train sweep.file=sweeps/X.yaml sweep.index=I          # one point
    phiscale-train -m sweep.file=sweeps/X.yaml 'sweep.index=range(0,N)'
    sbatch --array=0-(N-1) slurm/sweep.sbatch sweeps/X.yaml
"""

from __future__ import annotations

import itertools
import math
import re
import shlex
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from phiscale.errors import PhiscaleError
from phiscale.models.scaling import ALPHA, BASE_RESOLUTION, BETA, GAMMA, compound, macs_ratio
from phiscale.sweeps.constraint import Scalar, apply_constraint
from phiscale.sweeps.series import expand_series

TOP_LEVEL_KEYS = ("name", "description", "base", "tags", "points", "grid", "series", "levels", "constraint", "seeds")
SEED_KEY = "seed"  # the train config's seed (conf/train.yaml), set per run by `seeds:`
RANGE_KEYS = ("start", "stop", "step")
MAX_POINTS = 100_000
_NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")
_BARE_VALUE = re.compile(r"^[\w.\-/:+]+$")



@dataclass(frozen=True)
class PointScale:
    """What a point's overrides say about its scale: d, w, r and the expected MACs ratio to B0.

    MACs grow as d·w²·r² (arXiv 1905.11946 §3.3), which is (α·β²·γ²)^φ ≈ 2^φ for the formula
    family; a missing factor is None (e.g. a preset, whose coefficients live in the model table).
    """

    phi: float | None
    depth_mult: float | None
    width_mult: float | None
    resolution_mult: float | None
    macs_ratio: float | None


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep file: `overrides(i)` is what the train app composes for run i."""

    name: str
    path: Path
    description: str = ""
    base: list[str] = field(default_factory=list)
    points: list[list[str]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    grid_size: int = 0  # points before the constraint filtered them (0 without a constraint)
    seeds: list[int] = field(default_factory=list)  # empty: no seed axis
    point_tags: list[dict[str, str]] = field(default_factory=list)  # a point's own tags (its series), by point

    def __len__(self) -> int:
        """Runs in the sweep: points × seeds (the SLURM array and multirun index these)."""
        return len(self.points) * max(1, len(self.seeds))

    def check_index(self, index: int | str) -> int:
        """`index` as an int within the sweep, else an error naming the range."""
        if isinstance(index, bool) or not isinstance(index, int):
            try:
                index = int(str(index))
            except ValueError:
                raise PhiscaleError(f"sweep.index={index!r} is not an integer; pick 0…{len(self) - 1} for {self.path}") from None
        if not 0 <= index < len(self):
            raise PhiscaleError(
                f"sweep.index={index} is out of range for {self.path} ({len(self)} runs): "
                f"pick 0…{len(self) - 1}"
            )
        return index

    def point_of(self, index: int) -> int:
        """The point run `index` trains (runs of one point differ only in their seed)."""
        return self.check_index(index) // max(1, len(self.seeds))

    def seed_of(self, index: int) -> int | None:
        """The seed the sweep gives run `index`; None without a `seeds:` axis."""
        index = self.check_index(index)
        return self.seeds[index % len(self.seeds)] if self.seeds else None

    def own_overrides(self, index: int) -> list[str]:
        """What sets run `index` apart from the others: its point's overrides and its seed."""
        seed = self.seed_of(index)
        return [*self.points[self.point_of(index)], *([f"{SEED_KEY}={seed}"] if seed is not None else [])]

    def overrides(self, index: int) -> list[str]:
        """The Hydra overrides of run `index`: the shared `base`, then the point's own (and seed)."""
        return [*self.base, *self.own_overrides(index)]

    def run_tags(self, index: int) -> dict[str, str]:
        """MLflow tags for run `index`: the file's tags, `sweep=<name>`, `sweep_index`, `sweep_point`
        and, with a seed axis, `seed`."""
        seed = self.seed_of(index)
        tags = {**self.tags, **self.own_tags(index), "sweep": self.name,
                "sweep_index": str(self.check_index(index)), "sweep_point": str(self.point_of(index))}
        return tags | ({SEED_KEY: str(seed)} if seed is not None else {})

    def own_tags(self, index: int) -> dict[str, str]:
        """The tags run `index`'s point brings itself (a series point: its series, level and MACs target)."""
        point = self.point_of(index)
        return dict(self.point_tags[point]) if point < len(self.point_tags) else {}

    def scale(self, index: int) -> PointScale:
        """d, w, r and the MACs ratio that run `index` asks for, where its overrides say so."""
        return point_scale(self.overrides(index))

    def multirun_command(self, extra: Sequence[str] = ()) -> str:
        """The Hydra multirun command that trains every run (extra overrides appended)."""
        args = [
            "phiscale-train",
            "-m",
            f"sweep.file={self.path}",
            f"sweep.index=range(0,{len(self)})",
            *extra,
        ]
        return shlex.join(args)

    def sbatch_command(
        self,
        extra: Sequence[str] = (),
        *,
        script: str = "slurm/sweep.sbatch",
        max_parallel: int | None = None,
    ) -> str:
        """The plain SLURM array command: one array task per run (`%max_parallel` limits concurrency)."""
        array = f"0-{len(self) - 1}" + (f"%{max_parallel}" if max_parallel else "")
        return shlex.join(["sbatch", f"--array={array}", script, str(self.path), *extra])

    def submit_command(self, extra: Sequence[str] = (), *, max_parallel: int | None = None) -> str:
        """`phiscale-sweep submit`: the same array, recorded as a sweep with an id and a parent run."""
        args = ["phiscale-sweep", "submit", str(self.path), *extra]
        return shlex.join([*args, *(["--max-parallel", str(max_parallel)] if max_parallel else [])])


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; every error names the file, the bad value and the fix."""
    path = Path(path)
    raw = read_mapping(path)
    if "stages" in raw:
        raise PhiscaleError(f"{path} is a two-stage study (stages:): run it with `phiscale-sweep submit {path}`, "
                            "which chains its stages")
    return parse_sweep(raw, path)


def read_mapping(path: Path) -> dict:
    """A sweep file's YAML mapping, or an error naming the file and the fix."""
    if not path.is_file():
        raise PhiscaleError(f"sweep file {path} not found (cwd {Path.cwd()}): pass a path like sweeps/phi.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PhiscaleError(f"{path} is not valid YAML ({_one_line(err)}): fix the syntax") from None
    if not isinstance(raw, dict):
        raise PhiscaleError(f"{path} must be a YAML mapping with `grid:` and/or `points:`, got {raw!r}")
    return raw


def parse_sweep(raw: dict, file: Path, *, where: str | None = None, allowed: Sequence[str] = TOP_LEVEL_KEYS) -> Sweep:
    """A sweep from its mapping (a file's, or one stage's: then `where` names it in errors)."""
    path = where or file  # what the errors name
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise PhiscaleError(f"{path}: unknown key(s) {unknown}; allowed: {', '.join(allowed)}")

    name = str(raw.get("name") or file.stem)
    if not _NAME.match(name):
        raise PhiscaleError(f"{path}: name {name!r} must be letters, digits, '_', '-' or '.' (it becomes a tag)")
    description = str(raw.get("description") or "").strip()
    tags = raw.get("tags") or {}
    if not isinstance(tags, dict):
        raise PhiscaleError(f"{path}: tags must be a mapping like {{purpose: step1}}, got {tags!r}")
    base = _as_assignments(raw.get("base"), f"{path}: base")

    points: list[dict[str, Scalar]] = []
    explicit = raw.get("points") or []
    if not isinstance(explicit, list):
        raise PhiscaleError(f"{path}: points must be a list of mappings or override lists, got {explicit!r}")
    for i, point in enumerate(explicit):
        points.append(_as_assignments(point, f"{path}: points[{i}]"))
    grids = raw.get("grid") or []
    for i, grid in enumerate(grids if isinstance(grids, list) else [grids]):
        points.extend(_expand_grid(grid, f"{path}: grid" + (f"[{i}]" if isinstance(grids, list) else "")))
    series = raw.get("series")
    if isinstance(series, dict):
        series = {name: _as_assignments(value, f"{path}: series {name}") for name, value in series.items()}
    series_points, series_tags = expand_series(series, raw.get("levels"), str(path))
    point_tags = [{} for _ in points] + series_tags if series_tags else []
    points.extend(series_points)
    if not points:
        raise PhiscaleError(f"{path} has no points: add `grid:` axes, a `points:` list or `series:` with `levels:`")

    grid_size = 0
    if raw.get("constraint") is not None and series_points:
        raise PhiscaleError(f"{path}: constraint: and series: do not mix (a series fixes its own FLOPs levels); "
                            "put them in two sweep files")
    if raw.get("constraint") is not None:
        grid_size = len(points)
        points = apply_constraint(raw["constraint"], base, points, path)

    seeds = _seeds(raw.get("seeds"), path)
    if seeds:
        _refuse_seed_keys(base, points, path)
        if len(points) * len(seeds) > MAX_POINTS:
            raise PhiscaleError(f"{path}: {len(points)} points × {len(seeds)} seeds exceed {MAX_POINTS} runs; "
                                "use fewer points or seeds")
    rendered = [_render(point, f"{path}: point {i}") for i, point in enumerate(points)]
    _check_unique(rendered, path)
    return Sweep(
        name=name,
        path=file,
        description=description,
        base=_render(base, f"{path}: base"),
        points=rendered,
        tags={str(k): str(v) for k, v in tags.items()},
        grid_size=grid_size,
        seeds=seeds,
        point_tags=point_tags,
    )


def point_scale(overrides: Iterable[str]) -> PointScale:
    """d, w, r and MACs ratio from override strings (`model.phi`, α/β/γ, `model.*_mult`, `model.resolution`)."""
    values = {k: v for k, v in (_split(o, "override") for o in overrides)}
    num = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    phi = num.get("model.phi")
    d, w, r = num.get("model.depth_mult"), num.get("model.width_mult"), num.get("model.resolution_mult")
    if r is None and "model.resolution" in num:
        r = num["model.resolution"] / BASE_RESOLUTION
    if phi is not None:  # the φ family: the base network's d, w, r (default 1) times α^φ, β^φ, γ^φ
        with warnings.catch_warnings():  # a grid over α, β, γ may leave α·β²·γ² ≈ 2 on purpose
            warnings.simplefilter("ignore", UserWarning)
            formula = compound(phi, num.get("model.alpha", ALPHA), num.get("model.beta", BETA),
                               num.get("model.gamma", GAMMA))
        d, w = ((given or 1.0) * value for given, value in zip((d, w), formula[:2], strict=True))
        r = r if "model.resolution" in num else (r or 1.0) * formula[2]  # an explicit side wins
    if phi is None and d is None and w is None and r is None:
        return PointScale(None, None, None, None, None)
    return PointScale(phi, d, w, r, macs_ratio(d or 1.0, w or 1.0, r or 1.0))


def _as_assignments(value: Any, where: str) -> dict[str, Scalar]:
    """A mapping {key: value} or a list of `key=value` strings, as an ordered dict."""
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for key, val in value.items():
            _check_scalar(val, f"{where}: {key}")
            out[str(key)] = val
        return out
    if isinstance(value, list):
        out = {}
        for item in value:
            if not isinstance(item, str):
                raise PhiscaleError(f"{where}: {item!r} is not an override string; write it as 'key=value'")
            key, val = _split(item, where)
            out[key] = val
        return out
    raise PhiscaleError(f"{where}: expected a mapping or a list of 'key=value' strings, got {value!r}")


class _Verbatim(str):
    """An override value written as text in the file: rendered back exactly as written."""


def _split(override: str, where: str) -> tuple[str, Scalar]:
    """`key=value` -> (key, value): numbers parsed (for constraints), anything else kept verbatim."""
    key, sep, val = override.partition("=")
    if not sep or not key.strip():
        raise PhiscaleError(f"{where}: {override!r} is not an override; write it as 'key=value'")
    try:
        parsed = yaml.safe_load(val)
    except yaml.YAMLError:
        parsed = None
    if isinstance(parsed, int | float) and not isinstance(parsed, bool):
        return key.strip(), parsed
    return key.strip(), _Verbatim(val)


def _check_scalar(val: Any, where: str) -> None:
    if not (val is None or isinstance(val, str | int | float | bool)):
        raise PhiscaleError(f"{where}: {val!r} is not a single value; use a number or a name")


def _axis_values(axis: str, values: Any, where: str) -> list[Scalar]:
    if isinstance(values, dict):
        missing = [k for k in RANGE_KEYS if k not in values]
        extra = sorted(set(values) - set(RANGE_KEYS))
        if missing or extra:
            raise PhiscaleError(f"{where}: {axis}: a range needs exactly start, stop, step (stop included), got {values!r}")
        start, stop, step = (values[k] for k in RANGE_KEYS)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, stop, step)):
            raise PhiscaleError(f"{where}: {axis}: start, stop and step must be numbers, got {values!r}")
        if step <= 0 or stop < start:
            raise PhiscaleError(f"{where}: {axis}: need step > 0 and stop >= start, got {values!r}")
        count = math.floor((stop - start) / step + 1e-9) + 1
        if count > MAX_POINTS:
            raise PhiscaleError(f"{where}: {axis}: {values!r} gives {count} values; widen the step")
        as_int = all(isinstance(v, int) for v in (start, stop, step))
        return [start + i * step if as_int else round(start + i * step, 10) for i in range(count)]
    if not isinstance(values, list) or not values:
        raise PhiscaleError(f"{where}: {axis} must be a non-empty list or {{start, stop, step}}, got {values!r}")
    for v in values:
        _check_scalar(v, f"{where}: {axis}")
    return values


def _expand_grid(grid: Any, where: str) -> list[dict[str, Scalar]]:
    if not isinstance(grid, dict) or not grid:
        raise PhiscaleError(f"{where} must map each key to its values, e.g. model.phi: [0, 1, 2], got {grid!r}")
    axes = {str(axis): _axis_values(str(axis), values, where) for axis, values in grid.items()}
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_POINTS:
        raise PhiscaleError(f"{where} expands to {size} points (limit {MAX_POINTS}); use fewer axis values")
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _render(assignments: Mapping[str, Scalar], where: str) -> list[str]:
    """{key: value} -> ['key=value', …], each checked by Hydra's override parser (no sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for key, val in assignments.items():
        override = f"{key}={_format_value(val)}"
        try:
            parsed = parser.parse_override(override)
        except HydraException as err:
            raise PhiscaleError(f"{where}: {override!r} is not a Hydra override ({_one_line(err)})") from None
        if parsed.is_sweep_override():
            raise PhiscaleError(f"{where}: {override!r} is a multirun sweep; list the values under `grid:` instead")
        out.append(override)
    return out


def _format_value(val: Scalar) -> str:
    if isinstance(val, _Verbatim):
        return str(val)
    if val is None:
        return "null"
    if isinstance(val, bool):
        return "true" if val else "false"
    if isinstance(val, int | float):
        return repr(val)
    if _BARE_VALUE.match(val):
        return val
    return "'" + val.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _seeds(value: Any, path: Path) -> list[int]:
    """`seeds: [0, 1, 2]` -> [0, 1, 2]: distinct integers (torch and Lightning take 0 … 2³²-1)."""
    if value is None:
        return []
    example = "e.g. seeds: [0, 1, 2]"
    if not isinstance(value, list) or not value:
        raise PhiscaleError(f"{path}: seeds must be a non-empty list of integers, {example}; got {value!r}")
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise PhiscaleError(f"{path}: seed {seed!r} is not an integer in 0…2³²-1; {example}")
    repeated = sorted({s for s in value if value.count(s) > 1})
    if repeated:
        raise PhiscaleError(f"{path}: seeds {repeated} are listed twice; each seed once, {example}")
    return list(value)


def _refuse_seed_keys(base: Mapping[str, Scalar], points: list[dict[str, Scalar]], path: Path) -> None:
    """With a `seeds:` axis the seed is the sweep's: a point or the base may not set it too."""
    where = "base" if SEED_KEY in base else next(
        (f"point {i}" for i, point in enumerate(points) if SEED_KEY in point), None)
    if where is not None:
        raise PhiscaleError(f"{path}: {where} sets {SEED_KEY}= and the file has seeds:; "
                            f"drop one (seeds: repeats every point once per seed)")


def _check_unique(points: list[list[str]], path: Path) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for i, point in enumerate(points):
        key = tuple(sorted(point))
        if key in seen:
            raise PhiscaleError(f"{path}: point {i} {point} repeats point {seen[key]}; remove the duplicate")
        seen[key] = i


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
