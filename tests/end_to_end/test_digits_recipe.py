"""The embedded digits' short-run recipe (conf/recipe/digits.yaml) trains every MobileNet and
EfficientNet scale the README names to >= 95% best val top-1 in the default number of epochs,
with no experiment and no other override of the recipe: each model is a real `phiscale-train` process,
two at a time with one thread each (the recipe's time is set for 2 CPU cores), without the MLflow model
at its end (tests/tracking/test_models.py). The training runs in the background from the start of the
session, niced, in the cores' idle time (tests/support/recipe_lane.py); the test runs last and waits.
φ = 0 is not trained twice: under the recipe `model=efficientnet model.phi=0` builds EfficientNet-B0's
network, weight for weight (checked below).
The recipe's own unit checks: tests/test_config.py (which recipe applies), tests/models/test_build.py
(the head init and model.zero_init_residual)."""

from __future__ import annotations

import time

import pytest
import torch
from support import recipe_lane

TARGET_TOP1 = 0.95


def test_phi_0_under_the_recipe_is_efficientnet_b0_weight_for_weight():
    """Why the lane trains efficientnet_b0 and not also `model=efficientnet model.phi=0`."""
    from phiscale.config import compose_config
    from phiscale.models import build_model
    from phiscale.train.plan import make_plan

    built = []
    for overrides in (["model=efficientnet", "model.phi=0"], ["model=efficientnet_b0"]):
        cfg = compose_config(overrides)
        plan = make_plan(cfg)
        torch.manual_seed(0)
        model = build_model(cfg.model.name, plan.num_classes, **plan.model_kwargs)
        built.append(((plan.train_resolution, plan.eval_resolution), model.state_dict(),
                      [(type(m).__name__, getattr(m, "p", None)) for m in model.modules()]))
    (res_phi0, weights_phi0, layers_phi0), (res_b0, weights_b0, layers_b0) = built
    assert res_phi0 == res_b0 and layers_phi0 == layers_b0
    assert weights_phi0.keys() == weights_b0.keys()
    assert all(torch.equal(weights_phi0[k], weights_b0[k]) for k in weights_b0), "φ = 0 is not B0 under the recipe"


@pytest.mark.slow
def test_every_model_reaches_the_target_with_the_default_recipe(request, capsys):
    lane = recipe_lane.lane(request.config)
    waited = time.monotonic()
    results = {name: future.result(timeout=3 * 3600) for name, future in lane.futures.items()}
    with capsys.disabled():
        for name, r in results.items():
            top1 = "-" if r.top1 is None else f"{r.top1:.4f}"
            print(f"\n  {name:<22} best val top-1 {top1} after {r.epochs} epochs in {r.seconds:.0f} s (niced)")
        print(f"\n  {len(results)} models {recipe_lane.PARALLEL} at a time, done {time.monotonic() - lane.started:.0f} s "
              f"after the session started them; this test waited {time.monotonic() - waited:.0f} s for them")

    failed = {name: r.log for name, r in results.items() if r.returncode != 0}
    assert not failed, "failed: " + "\n".join(f"{n}:\n{log.read_text()[-3000:]}" for n, log in failed.items())
    assert {r.epochs for r in results.values()} == {results["mobilenet_v1"].epochs}, "all ran the default epochs"
    below = {name: round(r.top1, 4) for name, r in results.items() if r.top1 < TARGET_TOP1}
    assert not below, f"below {TARGET_TOP1:.0%} best val top-1 with the digits recipe: {below}"
    lane.passed = True
