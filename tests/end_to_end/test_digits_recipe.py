"""The embedded digits' short-run recipe (conf/recipe/digits.yaml) trains every MobileNet and
EfficientNet scale the README names to >= 95% best val top-1 in the default number of epochs,
with no experiment and no other override: each model is a real `phiscale-train` process, two at
a time with one thread each (the recipe's time is set for 2 CPU cores).
The recipe's own unit checks: tests/test_config.py (which recipe applies), tests/models/test_build.py
(the head init and model.zero_init_residual)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.runs import TRAIN

pytestmark = pytest.mark.slow

TARGET_TOP1 = 0.95
PARALLEL = 2
# Largest first, so the two workers finish close together (the longest job starts at once).
MODELS: dict[str, list[str]] = {
    "efficientnet-phi2": ["model=efficientnet", "model.phi=2"],
    "efficientnet-phi1.5": ["model=efficientnet", "model.phi=1.5"],
    "efficientnet-phi1": ["model=efficientnet", "model.phi=1"],
    "efficientnet_b1": ["model=efficientnet_b1"],
    "efficientnet-phi0.5": ["model=efficientnet", "model.phi=0.5"],
    "efficientnet_b0": ["model=efficientnet_b0"],
    "efficientnet-phi0": ["model=efficientnet", "model.phi=0"],
    "mobilenet_v3_large": ["model=mobilenet_v3_large"],
    "mobilenet_v2": ["model=mobilenet_v2"],
    "mobilenet_v1": ["model=mobilenet_v1"],
    "mobilenet_v3_small": ["model=mobilenet_v3_small"],
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def train_with_defaults(name: str, overrides: list[str], root: Path) -> dict:
    """`phiscale-train <model>` with the defaults; its summary.json plus the process's wall time."""
    out = root / name
    cmd = [TRAIN, *overrides, "trainer.progress_bar=false", f"run_name={name}", f"paths.output_dir={out}",
           f"tracking.uri=sqlite:///{root}/{name}.db"]  # one store per process: no sqlite lock contention
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * 3600, env=os.environ | ONE_THREAD)
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    summary = json.loads((out / "summary.json").read_text())
    return {"top1": summary["best_val_top1"], "epochs": summary["epoch"], "seconds": seconds}


def test_every_model_reaches_the_target_with_the_default_recipe(tmp_path, capsys):
    def run(item: tuple[str, list[str]]) -> tuple[str, dict]:
        name, overrides = item
        result = train_with_defaults(name, overrides, tmp_path)
        with capsys.disabled():
            print(f"\n  {name:<22} best val top-1 {result['top1']:.4f} after {result['epochs']} epochs"
                  f" in {result['seconds']:.0f} s", flush=True)
        return name, result

    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(pool.map(run, MODELS.items()))
    with capsys.disabled():
        print(f"\n  {len(results)} models in {time.monotonic() - started:.0f} s, {PARALLEL} at a time")

    assert {r["epochs"] for r in results.values()} == {results["mobilenet_v1"]["epochs"]}, "all ran the default epochs"
    below = {name: round(r["top1"], 4) for name, r in results.items() if r["top1"] < TARGET_TOP1}
    assert not below, f"below {TARGET_TOP1:.0%} best val top-1 with the digits recipe: {below}"
