"""phiscale-report reads a sweep's runs from MLflow (sqlite store and a real server) and writes
the table, Pareto front and plots, logged back as a "report" run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from phiscale.errors import PhiscaleError
from phiscale.report import (
    CSV_NAME,
    MARKDOWN_NAME,
    PLOT_MACS_VS_PHI,
    PLOT_TOP1_VS_MACS,
    PLOT_TOP1_VS_THROUGHPUT,
    REPORT_TAG,
    make_report,
    pareto_flags,
)

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


def test_missing_experiment_and_empty_experiment_are_named(sqlite_store, tmp_path):
    uri = sqlite_store
    with pytest.raises(PhiscaleError, match=r"experiment 'nope' not found .*existing: .*empty"):
        make_report("nope", tracking_uri=uri, out_dir=tmp_path / "r")
    with pytest.raises(PhiscaleError, match="'empty' .* has no training runs"):
        make_report("empty", tracking_uri=uri, out_dir=tmp_path / "r")


def test_an_absent_store_is_named_not_created(tmp_path):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(PhiscaleError, match="no MLflow database at .*none.db"):
        make_report("x", tracking_uri=missing)
    assert not (tmp_path / "none.db").exists(), "the report must not create an empty store"


def test_pareto_front_definition():
    # (MACs, top-1): equal points are both on the front; a point needs both values.
    points = [(1, 0.5), (2, 0.5), (2, 0.7), (3, 0.6), (3, 0.9), (3, 0.9), (None, 0.99), (4, None)]
    assert pareto_flags(points) == [True, False, True, False, True, True, False, False]


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
