"""The embedded digits' short-run recipe (conf/recipe/digits.yaml) trains every MobileNet and
EfficientNet scale the README names to >= 95% best val top-1 in the default number of epochs,
with no experiment and no other override: each model is a real `phiscale-train` process, two at
a time with one thread each (the recipe's time is set for 2 CPU cores)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TRAIN = str(Path(sys.executable).with_name("phiscale-train"))
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


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_b7", "mobilenet_v2"])
def test_a_ten_class_head_starts_near_chance(name):
    """The first loss on 10 classes is about ln 10: EfficientNet's reference head init (±1/sqrt(classes))
    would start near 5 on digits and stall the short run (phiscale.models.build.REFERENCE_HEAD_CLASSES)."""
    import torch

    from phiscale.models import build_model

    torch.manual_seed(0)
    model = build_model(name, num_classes=10, resolution=32)
    images, labels = torch.randn(16, 3, 32, 32), torch.arange(16) % 10
    loss = torch.nn.functional.cross_entropy(model(images), labels).item()
    assert abs(loss - math.log(10)) < 0.5, f"{name}: first loss {loss:.2f}, expected about ln 10 = 2.30"


def test_zero_init_residual_starts_every_residual_block_as_the_identity():
    """The recipe's model.zero_init_residual: a deep EfficientNet starts as its shortcut path."""
    import torch

    from phiscale.models import build_model
    from phiscale.models.layers import InvertedResidual

    model = build_model("efficientnet", num_classes=10, phi=2.0, zero_init_residual=True).eval()
    residual = [m for m in model.modules() if isinstance(m, InvertedResidual) and m.use_residual]
    assert len(residual) > 10
    for block in residual:
        channels = block.block[0][0].in_channels
        x = torch.randn(2, channels, 4, 4)
        assert torch.equal(block(x), x)


def test_zero_init_residual_refuses_a_non_boolean():
    from phiscale.errors import PhiscaleError
    from phiscale.models import build_model

    with pytest.raises(PhiscaleError, match="zero_init_residual='yes' must be true or false"):
        build_model("mobilenet_v2", num_classes=10, zero_init_residual="yes")


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


@pytest.mark.slow
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
