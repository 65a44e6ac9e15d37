"""Budget mode end to end: the φ the solver picks for a MACs budget is the φ that trains and is tagged in MLflow."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient


@pytest.mark.slow
def test_budget_mode_trains_the_phi_the_solver_picks(fast_overrides, tmp_path):
    from phiscale.config import compose_config
    from phiscale.models.budget import phi_for_budget
    from phiscale.train.run import run_training

    overrides = [o for o in fast_overrides if not o.startswith("model")]
    summary = run_training(compose_config([*overrides, "model=efficientnet", "budget.macs=1e9",
                                           "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                                           "trainer.limit_val_batches=1"]))
    expected = phi_for_budget("efficientnet", max_macs=1e9, num_classes=10)
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(summary["run_id"])
    assert float(run.data.tags["phi"]) == pytest.approx(expected)
    assert run.data.tags["budget_macs"] == "1e+09"
    assert run.info.run_name == f"efficientnet-phi{expected:g}"
    assert 1.0 < expected < 3.0  # 1 GMAC sits between B1 (0.7G) and B3 (1.8G)
