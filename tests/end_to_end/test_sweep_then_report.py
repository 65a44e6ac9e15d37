"""A real sweep of three φ points through Hydra multirun, then its report read back from a real MLflow server:
the multirun records the sweep (its callback) and its runs are children of one parent run. (The same sweep
on a sqlite store checked nothing more: the callback and the runs write through the same tracking
code to either store, and the report's sqlite reads are tests/report/test_build.py's.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from support.runs import TRAIN

from phiscale.report.build import make_report

PHIS = (0.0, 0.5, 1.0)


def write_sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "tiny_phi.yaml"
    sweep.write_text(
        "name: tiny_phi\n"
        "description: three points of the phi family, a few steps each\n"
        "base: [model=efficientnet]\n"
        "grid:\n"
        f"  model.phi: [{', '.join(str(p) for p in PHIS)}]\n"
    )
    return sweep


def run_sweep(tmp_path: Path, tracking_uri: str, fast_overrides: list[str]) -> None:
    overrides = [o for o in fast_overrides if not o.startswith(("model", "tracking.uri"))]
    cmd = [TRAIN, "-m", f"sweep.file={write_sweep(tmp_path)}", "sweep.index=range(0,3)",
           f"tracking.uri={tracking_uri}", "tracking.experiment=tiny_phi", *overrides,
           "trainer.max_epochs=1", "trainer.limit_train_batches=3"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]


def check_report(tracking_uri: str, out_dir: Path) -> None:
    report = make_report("tiny_phi", tracking_uri=tracking_uri, out_dir=out_dir)

    assert [row.phi for row in report.rows] == list(PHIS), "one row per φ, sorted by MACs"
    assert all(row.status == "FINISHED" for row in report.rows)
    macs = [row.macs for row in report.rows]
    assert macs == sorted(macs) and macs[0] > 0
    assert all(row.params > 0 and row.top1 is not None and row.images_per_s > 0 for row in report.rows)
    assert report.rows[0].pareto, "the cheapest run is always on the Pareto front"
    # Pareto flags agree with their definition on the real numbers.
    for row in report.rows:
        beaten = any(o.macs <= row.macs and o.top1 >= row.top1 and (o.macs, o.top1) != (row.macs, row.top1)
                     for o in report.rows)
        assert row.pareto == (not beaten), row

    pngs = [f for f in report.files if f.suffix == ".png"]
    assert len(pngs) == 3
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
        assert pixels.shape[0] > 200 and pixels.std() > 10, f"{png.name} looks blank"
    client = MlflowClient(tracking_uri)
    logged = {a.path for a in client.list_artifacts(report.run_id)}
    assert {f.name for f in report.files} <= logged
    runs = client.search_runs([report.experiment_id], "tags.sweep = 'tiny_phi'")
    assert sorted(float(r.data.tags["phi"]) for r in runs) == list(PHIS)
    assert sorted(r.data.tags["sweep_index"] for r in runs) == ["0", "1", "2"]
    # The multirun's callback recorded the sweep: one FINISHED parent, the three runs its children.
    (parent,) = client.search_runs([report.experiment_id], "tags.`phiscale.sweep_parent` = 'true'")
    assert parent.info.status == "FINISHED" and parent.data.tags["phiscale.sweep_points"] == "3"
    assert {r.data.tags.get("mlflow.parentRunId") for r in runs} == {parent.info.run_id}
    assert {r.data.tags["phiscale.sweep_id"] for r in runs} == {parent.info.run_name}
    record = Path(parent.data.tags["phiscale.sweeps.record"])
    assert record.is_file() and record.parent.parent.parent.name == "multirun"
    assert {r.data.tags["phiscale.output_dir"] for r in runs} == {str(record.parent / "points" / i) for i in "012"}


@pytest.mark.slow
def test_multirun_sweep_then_report_on_a_real_server(tmp_path, fast_overrides, mlflow_server):
    run_sweep(tmp_path, mlflow_server.url, fast_overrides)
    check_report(mlflow_server.url, tmp_path / "report")
