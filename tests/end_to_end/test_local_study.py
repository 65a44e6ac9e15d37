"""The shipped digits study trained here (`phiscale-sweep submit sweeps/compound_digits.yaml --local`):
the search in index order with early stopping (its diverging fourth point pruned at the rung, by
construction), the winner picked once, the scale stage training the winner's α, β, γ, the parent
FINISHED; then `phiscale-report --sweep` writes the study's tables, fit and pictures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support import background
from support.runs import NO_MODEL

from phiscale.report.study import SCALE_PNG, SEARCH_CSV, SEARCH_PNG

ROOT = Path(__file__).resolve().parents[2]
COEFFICIENTS = ("model.alpha", "model.beta", "model.gamma")


@background.job("digits-study")
def submit_the_study(root) -> tuple[list[str], dict[str, str]]:
    """The whole study: started with the session, in the cores' idle time (support/background.py)."""
    store = [f"paths.root={root}/out", f"tracking.uri=sqlite:///{root}/mlflow.db", "tracking.experiment=study", NO_MODEL]
    return [sys.executable, "-m", "phiscale.cli.sweep", "submit", str(ROOT / "sweeps/compound_digits.yaml"), *store,
            "--local"], {}


@pytest.mark.slow
@pytest.mark.background("digits-study")
def test_the_shipped_digits_study_runs_here_stage_after_stage_and_reports(request):
    done = background.result(request.config, "digits-study")
    tmp_path, uri = done.dir, f"sqlite:///{done.dir}/mlflow.db"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "parent run FINISHED" in done.stdout, done.stdout
    (record_path,) = (tmp_path / "out" / "sweeps").glob("*/sweep.json")
    record = json.loads(record_path.read_text())
    client = MlflowClient(uri)
    runs = {int(r.data.tags["sweep_index"]): r for r in client.search_runs(
        [client.get_experiment_by_name("study").experiment_id], f"tags.`phiscale.sweep_id` = '{record['id']}'")
        if "sweep_index" in r.data.tags}
    assert sorted(runs) == list(range(6)) and all(r.info.status == "FINISHED" for r in runs.values())
    assert runs[3].data.tags["phiscale.pruned"] == "1", "the diverging point is pruned at its rung"
    winner = runs[record["winner"]["index"]]
    assert "phiscale.pruned" not in winner.data.tags
    assert client.get_run(record["parent_run_id"]).data.tags["phiscale.search.winner"] == winner.info.run_id
    for index in (4, 5):
        assert {k: runs[index].data.params[k] for k in COEFFICIENTS} == {k: winner.data.params[k] for k in COEFFICIENTS}
    pruned = sum("phiscale.pruned" in r.data.tags for r in runs.values())
    assert record["epochs"] == {"spent": 12 - pruned, "full": 12}

    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "phiscale.cli.report", "--sweep", record["id"], "--root",
                             str(tmp_path / "out"), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    markdown = (out / "report.md").read_text()
    assert f"## Study {record['id']}: search, then scale" in markdown
    assert f"Epochs: {12 - pruned} spent of the full grid's 12" in markdown and "Least squares over the scale" in markdown
    assert all((out / name).is_file() for name in (SEARCH_CSV, SEARCH_PNG, SCALE_PNG))
    print(f"study {record['id']}: {pruned} pruned, epochs {record['epochs']}, winner {record['winner']['how']}")
    background.passed(request.config, "digits-study")
