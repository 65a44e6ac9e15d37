"""phiscale-train, the Hydra app: its help and choices, and one point of a sweep file composed
under the command line's own overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from support.runs import TRAIN

from phiscale.cli.train import compose_sweep_point, say_starting
from phiscale.config import conf_dir
from phiscale.errors import PhiscaleError


def test_unknown_option_prints_hydras_choices():
    result = subprocess.run([TRAIN, "model=resnet50"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "efficientnet_b0" in result.stderr and "mobilenet_v3_small" in result.stderr


def test_help_lists_the_config_groups():
    result = subprocess.run([TRAIN, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for group in ("model:", "data:", "trainer:", "optim:", "tracking:"):
        assert group in result.stdout


def test_help_is_hydras_help_word_for_word():
    """phiscale answers --help itself (Hydra's own took 0.8 s, issue 31): the same text, overrides applied."""
    args = ["model=efficientnet_b3", "trainer=gpu", "--help"]
    ours = subprocess.run([TRAIN, *args], capture_output=True, text=True, timeout=300)
    hydras = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = {['phiscale-train', *args]!r}\n"
                             "from phiscale.cli.train import train_app; train_app()"],
                            capture_output=True, text=True, timeout=300)
    assert ours.returncode == hydras.returncode == 0, ours.stderr + hydras.stderr
    assert "name: efficientnet_b3" in ours.stdout and "accelerator: gpu" in ours.stdout, ours.stdout
    assert ours.stdout == hydras.stdout


def test_the_first_line_comes_from_the_config_on_rank_zero_only(monkeypatch, capsys):
    from phiscale.config import compose_config

    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    cfg = compose_config(["experiment=digits_demo"])
    say_starting(cfg)
    assert capsys.readouterr().out == "phiscale: starting digits-demo: mobilenet_v3_small on digits\n"
    monkeypatch.setenv("LOCAL_RANK", "1")
    say_starting(cfg)
    assert capsys.readouterr().out == "", "rank 0 speaks for the run"


def compose_as_the_app(overrides: list[str]):
    """What `phiscale-train <overrides>` hands main(): the config, with Hydra's own node set."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            return compose_sweep_point(cfg)
        finally:
            HydraConfig.instance().cfg = None


def test_a_sweep_point_composes_under_the_command_lines_overrides(tmp_path):
    sweep = tmp_path / "two.yaml"
    sweep.write_text("name: two\nbase: [model=efficientnet, trainer.max_epochs=5, data.batch_size=8]\n"
                     "grid:\n  model.phi: [0.5, 1.5]\n")
    cfg, tags = compose_as_the_app([f"sweep.file={sweep}", "sweep.index=1", "trainer.max_epochs=3"])
    assert (cfg.model.name, cfg.model.phi) == ("efficientnet", 1.5), "point 1 of the grid"
    assert cfg.data.batch_size == 8, "the sweep's base applies"
    assert cfg.trainer.max_epochs == 3, "the command line comes last and wins"
    assert (cfg.sweep.file, cfg.sweep.index) == (str(sweep), 1)
    assert tags == {"sweep": "two", "sweep_index": "1", "sweep_point": "1", "seed": "0"}, "seed: the config's"


def test_a_recorded_run_composes_from_its_record_and_is_its_parents_child(tmp_path):
    """sweep.record: the record's overrides and extra, the command line's, then what the record pins."""
    from phiscale.sweeps.file import load_sweep
    from phiscale.sweeps.record import create_record

    sweep = tmp_path / "two.yaml"
    sweep.write_text("name: two\nbase: [model=efficientnet, data.batch_size=8]\ngrid:\n  model.phi: [0.5, 1.5]\n"
                     "seeds: [3, 4]\n")
    record = create_record(load_sweep(sweep), root=tmp_path / "out", extra=["trainer.max_epochs=5"],
                           submit_command="x", tracking_uri=f"sqlite:///{tmp_path}/m.db", experiment="exp")
    record.parent_run_id = "p" * 32
    record.save()
    sweep.write_text("grid: {model.phi: [9]}\n")  # edited after submission: the record still holds the sweep
    cfg, tags = compose_as_the_app([f"sweep.record={record.path}", "sweep.index=3", "data.batch_size=4"])
    assert (cfg.model.phi, cfg.seed, cfg.trainer.max_epochs, cfg.data.batch_size) == (1.5, 4, 5, 4)
    assert cfg.paths.output_dir == str(record.directory / "points" / "3")
    assert (cfg.tracking.uri, cfg.tracking.experiment) == (record.tracking_uri, "exp")
    assert tags == {"sweep": "two", "sweep_index": "3", "sweep_point": "1", "seed": "4",
                    "phiscale.sweep_id": record.id, "phiscale.sweep_overrides": "model.phi=1.5 seed=4",
                    "mlflow.parentRunId": "p" * 32}

    same = compose_as_the_app([f"sweep.record={record.path}", "sweep.index=3",
                               f"paths.output_dir={record.directory}/points/../points/3"])[0]
    assert same.paths.output_dir == str(record.directory / "points" / "3"), "the same dir, spelt otherwise"
    with pytest.raises(PhiscaleError, match=rf"tracking.experiment=other differs from sweep {record.id}'s exp"):
        compose_as_the_app([f"sweep.record={record.path}", "sweep.index=0", "tracking.experiment=other"])
    with pytest.raises(PhiscaleError, match="has no run sweep.index=7; its runs are 0-3"):
        compose_as_the_app([f"sweep.record={record.path}", "sweep.index=7"])


def test_a_sweep_file_without_an_index_is_one_line(tmp_path):
    sweep = tmp_path / "two.yaml"
    sweep.write_text("grid:\n  model.phi: [0.5, 1.5]\n")
    result = subprocess.run([TRAIN, f"sweep.file={sweep}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"phiscale-train: error: sweep.file={sweep} needs sweep.index=<point>; `phiscale-sweep {sweep}` lists them"
    )
    assert "Traceback" not in result.stderr
