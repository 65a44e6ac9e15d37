"""Start-up stays quick (issue 31): each console script, and each path a run takes before its first
step, imports only the heavy packages it needs. Every case runs in a fresh interpreter and names the
heavy packages it ended up holding; nothing here is timed (benchmarks/startup.py times them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]  # name -> "module:main"
# Each of these costs a 2-core machine a quarter of a second or more to import.
HEAVY = ("torch", "lightning", "torchmetrics", "mlflow", "deepspeed", "matplotlib", "scipy", "sklearn",
         "pandas", "numba", "ffcv", "sqlalchemy")
# What a script's --help may hold beyond nothing, and why (none today: phiscale.data imports its loaders,
# and so torch, on first use).
HELP_NEEDS: dict[str, set[str]] = {}


def heavy_after(code: str, timeout: float = 600) -> set[str]:
    """The HEAVY packages a fresh interpreter holds after running `code`."""
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def help_code(script: str) -> str:
    module, function = SCRIPTS[script].split(":")
    call = f"{function}()" if script == "phiscale-train" else f"{function}(['--help'])"  # Hydra reads sys.argv
    return (f"import contextlib, io, sys\nsys.argv = [{script!r}, '--help']\nfrom {module} import {function}\n"
            f"with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n    {call}")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_importing_a_console_script_imports_nothing_heavy(script):
    module = SCRIPTS[script].split(":")[0]
    assert heavy_after(f"import {module}") == set(), f"{module} imports these at its top: move them into its functions"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_answers_without_mlflow_lightning_or_torch(script):
    extra = heavy_after(help_code(script)) - HELP_NEEDS.get(script, set())
    assert extra == set(), f"`{script} --help` imports {sorted(extra)}"


def test_sweep_status_reads_mlflow_without_lightning_or_torch(tmp_path):
    from support.sweeps import Child, log_child, recorded_sweep

    record = recorded_sweep(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="status")
    log_child(record, 0, Child())
    code = (f"import contextlib, io\nfrom phiscale.cli.sweep import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main(['status', {record.id!r}, '--root', {str(tmp_path / 'out')!r}]) == 0")
    held = heavy_after(code)
    assert "mlflow" in held, "status reads the runs from MLflow (else this test checks nothing)"
    assert held.isdisjoint({"lightning", "torch", "deepspeed", "matplotlib"}), held


def test_a_ddp_trainer_is_built_without_deepspeed(tmp_path):
    code = f"""
from phiscale.config import compose_config
from phiscale.train.plan import make_plan
from phiscale.train.trainer import build_trainer
cfg = compose_config(["trainer=ddp", "trainer.accelerator=cpu", "data.num_workers=0",
                      "paths.root={tmp_path}", "tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
trainer, _ = build_trainer(cfg, make_plan(cfg), logger=False)
assert type(trainer.strategy).__name__ == "DDPStrategy", trainer.strategy
"""
    held = heavy_after(code)
    assert "lightning" in held and "deepspeed" not in held, held


@pytest.mark.slow
def test_a_run_takes_its_first_step_before_mlflow_and_without_plotting(tmp_path):
    """MLflow arrives with the sender after the first step (SendFromFirstStep); DeepSpeed and matplotlib
    never come into a CPU run that logs no model, nor scipy.signal before its first step."""
    from support.runs import FAST

    overrides = [*FAST, "trainer.max_epochs=1", f"paths.root={tmp_path}", f"tracking.uri=sqlite:///{tmp_path}/m.db"]
    code = f"""
import json, sys
from phiscale.config import compose_config
from phiscale.train.run import run_training
import lightning.pytorch as L

def held():  # packages, and scipy's submodules (numba imports scipy itself, which loads nothing more)
    return sorted({{m.split('.')[0] for m in sys.modules}} | {{m for m in sys.modules if m.startswith('scipy.')}})

class AtFirstStep(L.Callback):
    held = None
    def on_train_batch_start(self, trainer, *args):
        AtFirstStep.held = AtFirstStep.held or held()

summary = run_training(compose_config({overrides!r}), extra_callbacks=[AtFirstStep()])
assert summary["status"] == "finished" and summary["run_id"], summary
print(json.dumps({{"first": AtFirstStep.held, "end": held()}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {key: set(value) for key, value in json.loads(result.stdout.strip().splitlines()[-1]).items()}
    first, end = lines["first"], lines["end"]
    assert "mlflow" not in first, "MLflow was imported before the first step began"
    assert first.isdisjoint({"deepspeed", "matplotlib", "scipy.signal", "sklearn", "pandas"}), first & set(HEAVY)
    assert "mlflow" in end, "the sender sent the run after the first step"
    assert end.isdisjoint({"deepspeed", "matplotlib"}), end & set(HEAVY)
