"""phiscale-report reads a sweep's runs from MLflow (sqlite store and a real server) and writes
the table, Pareto front and plots, logged back as a "report" run; one sweep's report (--sweep) with
a point's seeds as one row (mean ± std, error bars), the augmentation column, MACs vs d·w²·r²."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from phiscale.errors import PhiscaleError
from phiscale.report import (
    CSV_NAME,
    MACS_VS_PHI_CAPTION,
    MARKDOWN_NAME,
    PLOT_MACS_VS_PHI,
    PLOT_TOP1_VS_MACS,
    PLOT_TOP1_VS_THROUGHPUT,
    REPORT_TAG,
    RunRow,
    aug_summary,
    augmentation_note,
    expected_macs_ratio,
    group_seeds,
    make_report,
    pareto_flags,
    write_plots,
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


# ---------------------------------------------------------------- one sweep, seeds, augmentation -----
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


def row(name: str, **kw) -> RunRow:
    values = dict(run_id=name, run_name=name, model="efficientnet", family="efficientnet", phi=0.0, depth_mult=1.0,
                  width_mult=1.0, resolution_mult=1.0, resolution=224, params=1e5, macs=1e6, top1=0.9,
                  images_per_s=100.0, device_hours=1.0, status="FINISHED")
    return RunRow(**(values | kw))


def test_seeds_of_a_point_merge_and_other_runs_stay_rows():
    rows = [row("a", sweep="s1", sweep_point=0, seeds="0", top1=0.8), row("b", sweep="s1", sweep_point=0, seeds="1",
            top1=0.9, status="RUNNING"), row("c", sweep="s2", sweep_point=0, seeds="0"), row("d")]
    merged = {r.run_name: r for r in group_seeds(rows)}
    assert set(merged) == {"a", "c", "d"}, "s1's point 0 is one row; another sweep's point 0 is not in it"
    a = merged["a"]
    assert (a.run_id, a.runs, a.seeds, a.status) == ("a,b", 2, "0,1", "RUNNING")
    assert a.top1 == pytest.approx(0.85) and a.top1_std == pytest.approx(0.0707107, rel=1e-5)
    assert a.device_hours == 2.0 and merged["d"].runs == 1 and merged["d"].top1_std is None


@pytest.mark.parametrize(("params", "text"), [
    ({}, "none"),
    ({"aug.policy": "none", "aug.mixup": "0.0", "aug.cutmix": "0", "aug.erasing": "0.0"}, "none"),
    ({"aug.policy": "autoaugment"}, "autoaugment"),
    ({"aug.policy": "randaugment", "aug.num_ops": "2", "aug.magnitude": "9", "aug.mixup": "0.2",
      "aug.erasing": "0.25"}, "randaugment n2 m9, mixup 0.2, erasing 0.25"),
    ({"aug.cutmix": "1.0", "aug.mix_prob": "1.0"}, "cutmix 1.0"),
])  # fmt: skip
def test_the_augmentation_column_names_what_is_on(params, text):
    assert aug_summary(params) == text


def test_a_report_mixing_augmentation_settings_says_so_once():
    same = [row("a"), row("b")]
    assert augmentation_note(same) is None
    mixed = [row("a"), row("b", aug="randaugment n2 m9"), row("c")]
    note = augmentation_note(mixed)
    assert note.startswith("Augmentation differs between these runs: none (2 rows); randaugment n2 m9 (1 row)")
    assert "\n" not in note


def test_macs_expected_from_d_w_r_relative_to_the_anchor():
    anchor = row("phi0")
    one = row("phi1", depth_mult=1.2, width_mult=1.1, resolution_mult=1.15)
    assert expected_macs_ratio(one, anchor) == pytest.approx(1.2 * 1.1**2 * 1.15**2)
    assert expected_macs_ratio(row("preset", depth_mult=None), anchor) is None


def test_error_bars_are_drawn_for_rows_over_several_seeds(tmp_path):
    """The same rows with and without a spread over seeds: the PNGs differ (bars around the markers)."""
    import numpy as np
    from PIL import Image

    spread = [row("p0", top1=0.9, top1_std=0.03, runs=3), row("p1", macs=4e6, top1=0.95, top1_std=0.02, runs=3)]
    single = [row("p0", top1=0.9), row("p1", macs=4e6, top1=0.95)]
    for name, rows in (("spread", spread), ("single", single)):
        (tmp_path / name).mkdir()
        write_plots(rows, tmp_path / name)
    with_bars, without = (np.asarray(Image.open(tmp_path / n / PLOT_TOP1_VS_MACS).convert("L"), dtype=np.int16)
                          for n in ("spread", "single"))
    assert with_bars.shape == without.shape and (np.abs(with_bars - without) > 40).sum() > 100
