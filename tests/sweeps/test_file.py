"""Sweep files: every file in sweeps/ loads, points index the same way for SLURM and multirun,
and each point names its scale and the commands that train it."""

from __future__ import annotations

from pathlib import Path

import pytest

from phiscale.config import conf_dir
from phiscale.errors import PhiscaleError
from phiscale.sweeps.file import load_sweep, point_scale

ROOT = Path(__file__).resolve().parents[2]
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_four_sweeps_are_there():
    assert {p.stem for p in SWEEP_FILES} >= {"phi", "efficientnet_b0_b7", "abg_grid", "mobilenet_width"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_sweep_file_loads_into_hydra_overrides(path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from phiscale.sweeps.study import load_study

    study = load_study(path)  # a plain sweep file, or each stage of a two-stage study
    assert len(study) >= 1 and study.name == path.stem and study.description
    parser = OverridesParser.create()
    for sweep in (stage.sweep for stage in study.stages):
        for i in range(len(sweep)):
            overrides = sweep.overrides(i)
            assert overrides[: len(sweep.base)] == sweep.base
            keys = [parser.parse_override(o).key_or_group for o in overrides]
            assert len(keys) == len(set(keys)), f"point {i} sets a key twice: {overrides}"
            assert any(k == "model" for k in keys), f"point {i} does not choose a model: {overrides}"


def test_phi_sweep_is_the_formula_family():
    sweep = load_sweep(ROOT / "sweeps/phi.yaml")
    assert sweep.overrides(0) == ["model=efficientnet", "model.phi=0"]
    phis = [sweep.scale(i).phi for i in range(len(sweep))]
    assert phis == sorted(phis) and phis[0] == 0 and phis[-1] == 7
    one = sweep.scale(phis.index(1))
    assert (one.depth_mult, one.width_mult, one.resolution_mult) == pytest.approx((1.2, 1.1, 1.15))
    assert one.macs_ratio == pytest.approx(1.2 * 1.1**2 * 1.15**2)  # ≈ 2^1


def test_presets_sweep_lists_b0_to_b7():
    sweep = load_sweep(ROOT / "sweeps/efficientnet_b0_b7.yaml")
    assert [sweep.overrides(i) for i in range(len(sweep))] == [[f"model=efficientnet_b{i}"] for i in range(8)]


def test_abg_grid_keeps_only_points_inside_the_window():
    sweep = load_sweep(ROOT / "sweeps/abg_grid.yaml")
    assert sweep.grid_size > len(sweep) > 5, "the constraint should drop part of the grid"
    chosen = set()
    for i in range(len(sweep)):
        values = dict(o.split("=") for o in sweep.overrides(i))
        assert values["model"] == "efficientnet" and float(values["model.phi"]) == 1
        a, b, g = (float(values[f"model.{k}"]) for k in ("alpha", "beta", "gamma"))
        assert abs(a * b**2 * g**2 / 2 - 1) <= 0.05 + 1e-9, f"point {i}: α·β²·γ² = {a * b**2 * g**2:.3f}"
        chosen.add((a, b, g))
    assert (1.2, 1.1, 1.15) in chosen, "the paper's α, β, γ must be in the grid"


def test_mobilenet_sweep_covers_widths_and_resolutions():
    sweep = load_sweep(ROOT / "sweeps/mobilenet_width.yaml")
    points = [dict(o.split("=") for o in sweep.overrides(i)) for i in range(len(sweep))]
    assert {p["model"] for p in points} == {"mobilenet_v1", "mobilenet_v2"}
    widths = sorted({float(p["model.width_mult"]) for p in points})
    assert widths[0] == 0.35 and widths[-1] == 1.4
    assert sorted({int(p["model.resolution"]) for p in points}) == [128, 160, 192, 224]
    smallest = sweep.scale(0)  # v1, width 0.35 at 128 px
    assert smallest.resolution_mult == pytest.approx(128 / 224)
    assert smallest.macs_ratio == pytest.approx(0.35**2 * (128 / 224) ** 2)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_points_compose_with_the_train_config(path):
    """The keys a sweep sets exist in conf/ (first and last point: every key of a grid)."""
    from hydra import compose, initialize_config_dir

    from phiscale.sweeps.study import load_study

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):  # conf_dir() registers the model group
        for stage in load_study(path).stages:  # a study's stages too, with the early stopping they hand on
            sweep, handed = stage.sweep, stage.early_stop.overrides() if stage.early_stop else []
            for i in sorted({0, len(sweep) - 1}):
                cfg = compose(config_name="train", overrides=[*sweep.overrides(i), *handed])
                values = dict(o.split("=", 1) for o in sweep.overrides(i))
                assert cfg.model.name == values["model"], f"point {i}: {sweep.overrides(i)}"
                assert not handed or list(cfg.sweep.early_stop.rungs) == list(stage.early_stop.rungs)


@pytest.mark.parametrize("index", [-1, 8, 100, "two"])
def test_an_index_outside_the_sweep_names_the_range(index):
    sweep = load_sweep(ROOT / "sweeps/phi.yaml")
    with pytest.raises(PhiscaleError, match=r"pick 0…7"):
        sweep.overrides(index)


def test_index_from_the_command_line_may_be_a_string():
    sweep = load_sweep(ROOT / "sweeps/phi.yaml")
    assert sweep.overrides("3") == sweep.overrides(3)  # type: ignore[arg-type]
    assert sweep.run_tags(3) == {"sweep": "phi", "sweep_index": "3", "sweep_point": "3"}, "no seed axis: no seed tag"


def test_commands_for_slurm_and_multirun(monkeypatch):
    monkeypatch.chdir(ROOT)
    sweep = load_sweep("sweeps/phi.yaml")
    assert sweep.sbatch_command() == "sbatch --array=0-7 slurm/sweep.sbatch sweeps/phi.yaml"
    assert sweep.sbatch_command(["trainer=gpu"], max_parallel=4) == (
        "sbatch --array=0-7%4 slurm/sweep.sbatch sweeps/phi.yaml trainer=gpu"
    )
    assert sweep.multirun_command(["trainer=gpu"]) == (
        "phiscale-train -m sweep.file=sweeps/phi.yaml 'sweep.index=range(0,8)' trainer=gpu"
    )
    assert sweep.submit_command(["trainer=gpu"], max_parallel=4) == (
        "phiscale-sweep submit sweeps/phi.yaml trainer=gpu --max-parallel 4"
    )


def test_grid_ranges_points_base_and_tags(tmp_path):
    path = write(
        tmp_path,
        """
name: mix
base: {model: efficientnet, trainer.max_epochs: 3}
tags: {purpose: test}
points:
  - {model.phi: 0.5}
  - [model.phi=9, data.root=/data/x y]
grid:
  - model.phi: {start: 1, stop: 2, step: 0.25}
  - {model: [efficientnet_b0]}
""",
    )
    sweep = load_sweep(path)
    assert sweep.base == ["model=efficientnet", "trainer.max_epochs=3"]
    assert sweep.points[0] == ["model.phi=0.5"]
    assert sweep.points[1] == ["model.phi=9", "data.root=/data/x y"], "written overrides stay verbatim"
    assert [p[0] for p in sweep.points[2:7]] == [f"model.phi={v}" for v in (1.0, 1.25, 1.5, 1.75, 2.0)]
    assert sweep.overrides(7) == ["model=efficientnet", "trainer.max_epochs=3", "model=efficientnet_b0"]
    assert len(sweep) == 8 and sweep.run_tags(0)["purpose"] == "test"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("grid: {model.phi: [0, 1]}\ncolour: red\n", r"unknown key\(s\) \['colour'\]"),
        ("description: nothing\n", "has no points"),
        ("grid: {model.phi: []}\n", "non-empty list"),
        ("grid: {model.phi: {start: 0, stop: 1}}\n", "start, stop, step"),
        ("points: [['model.phi=1,2']]\n", "multirun sweep; list the values under `grid:`"),
        ("points: [[model.phi]]\n", "not an override"),
        ("points: [{model.phi: 1}, {model.phi: 1}]\n", "point 1 .* repeats point 0"),
        ("grid: {model.phi: [[1, 2]]}\n", "not a single value"),
        ("grid: {model.phi: [0\n", "not valid YAML"),
        ("name: a b\ngrid: {model.phi: [0]}\n", "name 'a b'"),
        (
            "grid: {model.alpha: [1.0, 1.1]}\n"
            "constraint: {product: {model.alpha: 1}, target: 2.0, rel_tol: 0.05}\n",
            r"no point lies within 2.0·\(1 ± 0.05\) \(closest: 1.1\)",
        ),
        (
            "grid: {model.alpha: [1.0]}\nconstraint: {product: {model.beta: 2}, target: 2.0, rel_tol: 0.05}\n",
            "point 0 has no model.beta",
        ),
        ("grid: {model.phi: [0]}\nseeds: []\n", "seeds must be a non-empty list"),
        ("grid: {model.phi: [0]}\nseeds: 3\n", "seeds must be a non-empty list"),
        ("grid: {model.phi: [0]}\nseeds: [0, 1.5]\n", r"seed 1.5 is not an integer"),
        ("grid: {model.phi: [0]}\nseeds: [0, -1]\n", r"seed -1 is not an integer in 0…2³²-1"),
        ("grid: {model.phi: [0]}\nseeds: [1, 2, 1]\n", r"seeds \[1\] are listed twice"),
        ("base: [seed=3]\ngrid: {model.phi: [0]}\nseeds: [0, 1]\n", "base sets seed= and the file has seeds:"),
        ("grid: {model.phi: [0], seed: [4, 5]}\nseeds: [0]\n", "point 0 sets seed= and the file has seeds:"),
    ],
)
def test_bad_sweep_files_say_what_to_fix(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PhiscaleError, match=message) as err:
        load_sweep(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(PhiscaleError, match=r"sweep file .*nope.yaml not found"):
        load_sweep(tmp_path / "nope.yaml")


def test_point_scale_from_width_and_resolution():
    scale = point_scale(["model=mobilenet_v2", "model.width_mult=0.5", "model.resolution_mult=0.5"])
    assert scale.phi is None and scale.macs_ratio == pytest.approx(0.5**2 * 0.5**2)
    assert point_scale(["model=efficientnet_b3"]).macs_ratio is None


def test_seeds_repeat_every_point_with_the_seeds_of_a_point_consecutive(tmp_path):
    """Run i is point i // S with seed seeds[i % S]: the index space is points × seeds."""
    path = write(tmp_path, "name: seeded\nbase: [model=efficientnet]\ngrid: {model.phi: [0, 0.5]}\n"
                           "seeds: [7, 0, 3]\ntags: {purpose: noise}\n")
    sweep = load_sweep(path)
    assert len(sweep) == 6 and len(sweep.points) == 2 and sweep.seeds == [7, 0, 3]
    assert [(sweep.point_of(i), sweep.seed_of(i)) for i in range(6)] == [
        (0, 7), (0, 0), (0, 3), (1, 7), (1, 0), (1, 3)]
    assert sweep.overrides(4) == ["model=efficientnet", "model.phi=0.5", "seed=0"]
    assert sweep.own_overrides(2) == ["model.phi=0", "seed=3"]
    assert sweep.run_tags(5) == {"purpose": "noise", "sweep": "seeded", "sweep_index": "5", "sweep_point": "1",
                                 "seed": "3"}
    assert sweep.scale(3).phi == 0.5, "a seed does not change the scale"
    assert sweep.sbatch_command() == f"sbatch --array=0-5 slurm/sweep.sbatch {path}"
    with pytest.raises(PhiscaleError, match=r"pick 0…5"):
        sweep.overrides(6)


def test_without_seeds_a_run_is_a_point_and_keeps_the_configs_seed():
    sweep = load_sweep(ROOT / "sweeps/phi.yaml")
    assert sweep.seeds == [] and len(sweep) == len(sweep.points)
    assert sweep.seed_of(2) is None and sweep.point_of(2) == 2
    assert not any(o.startswith("seed=") for o in sweep.overrides(2))


def test_a_seeded_sweep_composes_its_seed_into_the_train_config(tmp_path):
    from hydra import compose, initialize_config_dir

    sweep = load_sweep(write(tmp_path, "grid: {model.phi: [0]}\nbase: [model=efficientnet]\nseeds: [11, 12]\n"))
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):  # conf_dir() registers the model group
        assert compose(config_name="train", overrides=sweep.overrides(1)).seed == 12
