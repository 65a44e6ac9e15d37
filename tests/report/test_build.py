"""phiscale-report end to end: a sweep's runs read from MLflow (a sqlite store and a real server)
become the table, the Pareto front and the plots, logged back as a "report" run; one sweep's report
(--sweep) with a point's seeds as one row (mean ± std)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from phiscale.report.build import make_report
from phiscale.report.plots import (
    MACS_VS_PHI_CAPTION,
    PLOT_MACS_VS_PHI,
    PLOT_TOP1_VS_MACS,
    PLOT_TOP1_VS_THROUGHPUT,
)
from phiscale.report.rows import REPORT_TAG
from phiscale.report.tables import CSV_NAME, MARKDOWN_NAME

EXPECTED_FILES = {MARKDOWN_NAME, CSV_NAME, PLOT_TOP1_VS_MACS, PLOT_TOP1_VS_THROUGHPUT, PLOT_MACS_VS_PHI}


def assert_png_has_content(path):
    import matplotlib.image as mpimg

    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200, (
        f"{path.name}: {pixels.shape}"
    )
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, f"{path.name} is nearly blank (pixel std {rgb.std():.3f})"
    colours = np.unique((rgb * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 20, f"{path.name} has only {len(colours)} distinct colours"


def check_report(report, fake_sweep):
    """Everything a user reads in the report of the fake sweep."""
    rows = report.rows
    assert [r.run_name for r in rows] == fake_sweep.order, (
        "rows not sorted by MACs (or report runs not skipped)"
    )
    assert [r.macs for r in rows] == sorted(r.macs for r in rows)
    assert {r.run_name: r.pareto for r in rows} == fake_sweep.pareto
    by_name = {r.run_name: r for r in rows}
    assert by_name["mobilenet_v1-w1.0"].top1 == pytest.approx(0.70), "no val/top1_best: max of val/top1"
    assert by_name["efficientnet-phi0"].top1 == pytest.approx(0.77)
    assert by_name["efficientnet-phi0"].device_hours == pytest.approx(2.0, rel=1e-3), "1 h × world_size 2"
    assert by_name["efficientnet-phi1"].resolution_mult == pytest.approx(256 / 224), "r from resolution/224"
    assert by_name["efficientnet-phi2"].images_per_s == pytest.approx(150.0), "last perf/images_per_s"
    assert by_name["mobilenet_v2-w0.5"].phi is None
    running = by_name["efficientnet-phi3"]
    assert running.status == "RUNNING" and running.running
    assert running.top1 == pytest.approx(0.62) and running.device_hours == pytest.approx(0.5, abs=0.05)

    out = report.out_dir
    assert {p.name for p in report.files} == EXPECTED_FILES
    with open(out / CSV_NAME) as f:
        table = list(csv.DictReader(f))
    assert [r["run_name"] for r in table] == fake_sweep.order
    assert [r["pareto"] == "True" for r in table] == [fake_sweep.pareto[n] for n in fake_sweep.order]
    assert float(table[0]["macs"]) == pytest.approx(97e6)

    markdown = (out / MARKDOWN_NAME).read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(fake_sweep.order), "header + one line per run"
    assert [line.split("|")[1].strip() for line in lines[1:]] == fake_sweep.order
    for line in lines[1:]:
        name = line.split("|")[1].strip()
        assert ("★" in line) == fake_sweep.pareto[name], f"Pareto mark wrong for {name}"
    assert "⏳" in next(line for line in lines if "efficientnet-phi3" in line), "running run not marked"
    for png in (PLOT_TOP1_VS_MACS, PLOT_TOP1_VS_THROUGHPUT, PLOT_MACS_VS_PHI):
        assert f"]({png})" in markdown
        assert_png_has_content(out / png)


def logged_files(tracking_uri, run_id):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "report" and run.data.tags.get(REPORT_TAG) == "true"
    assert run.info.status == "FINISHED"
    return client, {a.path for a in client.list_artifacts(run_id)}


def test_report_from_a_sqlite_store(sqlite_store, tmp_path, fake_sweep, capsys):
    uri = sqlite_store
    report = make_report("sweep", tracking_uri=uri, out_dir=tmp_path / "report")
    check_report(report, fake_sweep)
    client, artifacts = logged_files(uri, report.run_id)
    assert artifacts == EXPECTED_FILES
    png = client.download_artifacts(report.run_id, PLOT_TOP1_VS_MACS, str(tmp_path))
    assert_png_has_content(Path(png))

    # Again through the CLI: the report run just made is skipped like the older one.
    from phiscale.cli.report import main

    assert main(["--experiment", "sweep", "--tracking-uri", uri, "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert f"{len(fake_sweep.order)} runs in 'sweep' (1 running)" in out
    assert "Pareto front: mobilenet_v2-w0.5, efficientnet-phi0, efficientnet-phi1, efficientnet-phi2" in out
    reports = client.search_runs(
        [report.experiment_id], filter_string=f"tags.`{REPORT_TAG}` = 'true'", max_results=10
    )
    assert len(reports) == 3, "the fixture's stale report, the first and the CLI's"


@pytest.mark.slow
def test_report_against_a_real_mlflow_server(mlflow_server, server_experiment, fake_sweep, tmp_path):
    name, _ = server_experiment
    report = make_report(name, tracking_uri=mlflow_server.url, out_dir=tmp_path / "report")
    check_report(report, fake_sweep)
    _, artifacts = logged_files(mlflow_server.url, report.run_id)
    assert artifacts == EXPECTED_FILES
    # Proxied artifacts: the server wrote them under its --artifacts-destination.
    stored = {p.name for p in mlflow_server.root.joinpath("artifacts").rglob("*") if p.is_file()}
    assert EXPECTED_FILES <= stored, f"artifacts not proxied to the server's store: {sorted(stored)}"


def test_a_sweeps_report_has_one_row_per_point_with_mean_and_std_over_seeds(tmp_path, sqlite_store):
    from mlflow.tracking import MlflowClient
    from support.sweeps import Child, log_child, recorded_sweep

    record = recorded_sweep(tmp_path, sqlite_store, experiment="seeded")
    scale = {0: {"phi": "0", "depth_mult": "1", "width_mult": "1", "resolution_mult": "1"},
             1: {"phi": "1", "depth_mult": "1.2", "width_mult": "1.1", "resolution_mult": "1.15"}}
    top1 = {0: 0.90, 1: 0.92, 2: 0.94, 3: 0.95, 4: 0.97}  # run 5 (point 1, seed 2) never ran
    for index, value in top1.items():
        point = index // 3
        log_child(record, index, Child(top1=value, images_per_s=100.0 + 10 * index, tags=scale[point],
                                       macs=1e6 * (1 + 2 * point), aug={"aug.policy": "none"} if point else {}))
    report = make_report(sweep=record.id, root=tmp_path / "out", out_dir=tmp_path / "report")

    assert report.sweep_id == record.id and len(report.rows) == 2, "one row per point"
    first, second = report.rows
    assert (first.phi, first.runs, first.seeds, first.state) == (0.0, 3, "0,1,2", "finished")
    assert first.top1 == pytest.approx(0.92) and first.top1_std == pytest.approx(0.02)
    assert first.images_per_s == pytest.approx(110.0) and first.images_per_s_std == pytest.approx(10.0)
    assert (second.runs, second.seeds, second.state) == (3, "0,1,2", "2 finished, 1 missing")
    assert second.top1 == pytest.approx(0.96) and second.top1_std == pytest.approx(0.0141421, rel=1e-4)
    assert first.pareto and second.pareto, "the front on the means: more MACs, higher mean top-1"
    assert first.aug == second.aug == "none", "aug.policy=none is no augmentation, as is no aug.* param"

    with open(report.out_dir / CSV_NAME) as f:
        table = list(csv.DictReader(f))
    assert [float(r["top1_mean"]) for r in table] == pytest.approx([0.92, 0.96])
    assert float(table[0]["top1_std"]) == pytest.approx(0.02) and table[0]["images_per_s_std"] == "10.0"
    markdown = (report.out_dir / MARKDOWN_NAME).read_text()
    assert "| state |" in markdown and "| seeds |" in markdown and "0.9200 ± 0.0200" in markdown
    assert "110.0 ± 10.0" in markdown and "Augmentation differs" not in markdown
    assert MACS_VS_PHI_CAPTION in markdown
    for png in (PLOT_TOP1_VS_MACS, PLOT_TOP1_VS_THROUGHPUT, PLOT_MACS_VS_PHI):
        assert_png_has_content(report.out_dir / png)
    report_run = MlflowClient(sqlite_store).get_run(report.run_id)
    assert report_run.data.tags["mlflow.parentRunId"] == record.parent_run_id, "nested under its sweep"
    assert report_run.data.tags[f"{REPORT_TAG}.sweep_id"] == record.id
