"""phiscale-report: the printed table of a sweep (Pareto runs starred), --no-log, and one-line errors."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from phiscale.cli.report import main
from phiscale.report.rows import REPORT_TAG
from phiscale.report.tables import CSV_NAME, MARKDOWN_NAME


def report_runs(uri: str) -> int:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep")
    return len(client.search_runs([experiment.experiment_id], filter_string=f"tags.`{REPORT_TAG}` = 'true'"))


def test_the_table_stars_the_pareto_front_and_no_log_writes_files_only(sqlite_store, fake_sweep, tmp_path,
                                                                       capsys):
    before = report_runs(sqlite_store)
    out_dir = tmp_path / "report"
    assert main(["--experiment", "sweep", "--tracking-uri", sqlite_store, "--out", str(out_dir), "--no-log"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{len(fake_sweep.order)} runs in 'sweep' (1 running), sorted by MACs:"
    rows = lines[1 : 1 + len(fake_sweep.order)]
    assert [row.split()[1 if row.lstrip().startswith("★") else 0] for row in rows] == fake_sweep.order
    for name, row in zip(fake_sweep.order, rows, strict=True):
        assert row.lstrip().startswith("★") == fake_sweep.pareto[name], f"Pareto star wrong for {name}: {row!r}"
        assert "MACs" in row and "top-1" in row
    assert lines[-1].startswith("wrote ") and str(out_dir / MARKDOWN_NAME) in lines[-1]
    assert (out_dir / CSV_NAME).is_file()
    assert not any(line.startswith("logged as run") for line in lines)
    assert report_runs(sqlite_store) == before, "--no-log must not create a report run"


def test_cli_error_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none.db" in err
