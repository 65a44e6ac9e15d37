"""The whole report: read the runs, group a point's seeds, write Markdown + CSV + PNGs to a folder,
and log that folder as the artifacts of a run named "report" (tag `phiscale.report=true`) in the
same experiment (a child of the sweep's parent for a sweep's report)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from phiscale import tracking
from phiscale.errors import PhiscaleError
from phiscale.report.plots import write_plots
from phiscale.report.rows import (
    REPORT_RUN_NAME,
    REPORT_TAG,
    RunRow,
    group_seeds,
    read_runs,
    read_sweep,
    sort_and_mark,
)
from phiscale.report.series import write_series
from phiscale.report.tables import CSV_NAME, MARKDOWN_NAME, write_csv, write_markdown
from phiscale.sweeps.record import PARENT_RUN_TAG


@dataclass
class Report:
    """What `make_report` produced: the rows (sorted by MACs) and the files it wrote and logged."""

    experiment: str
    experiment_id: str
    tracking_uri: str
    rows: list[RunRow]
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    run_id: str | None = None  # the "report" run that holds the files as artifacts
    sweep_id: str | None = None  # report --sweep: the sweep

    @property
    def pareto(self) -> list[RunRow]:
        return [r for r in self.rows if r.pareto]


def make_report(
    experiment: str | None = None,
    *,
    sweep: str | None = None,
    root: str | Path = "outputs",
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    log_to_mlflow: bool = True,
) -> Report:
    """Read the runs (of `experiment`, or of `sweep` under `root`), group a point's seeds, write
    Markdown + CSV + PNGs to `out_dir`, and log them as a "report" run (a child of the sweep's parent)."""
    if (experiment is None) == (sweep is None):
        raise PhiscaleError("give one of --experiment NAME or --sweep SWEEP_ID|NAME")
    tags = {REPORT_TAG: "true"}
    record = None
    if sweep is not None:
        record, experiment_id, rows = read_sweep(sweep, root, tracking_uri)
        uri, experiment, title = record.tracking_uri, record.experiment, f"sweep {record.id}"
        tags |= {f"{REPORT_TAG}.sweep_id": record.id} | ({PARENT_RUN_TAG: record.parent_run_id}
                                                          if record.parent_run_id else {})
    else:
        uri = tracking.resolve_uri(tracking_uri)
        experiment_id, rows = read_runs(experiment, uri)
        title = experiment
    rows = sort_and_mark(group_seeds(rows))
    out = Path(out_dir) if out_dir else Path("outputs") / "reports" / (record.id if record else experiment)
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(rows, out)
    files = [
        write_markdown(rows, out / MARKDOWN_NAME, title=title, tracking_uri=uri, plots=plots),
        write_csv(rows, out / CSV_NAME),
        *plots,
    ]
    if record is not None and record.stages:  # a two-stage study: its search table, scale curve and fit
        from phiscale.report.study import write_study
        from phiscale.sweeps.status import sweep_status

        section, study_files = write_study(record, sweep_status(record), out)
        with open(files[0], "a") as markdown:
            markdown.write("\n" + section)
        files += study_files
    series = write_series(rows, out)  # a sweep file's scaling series: a curve per series, a table per level
    if series is not None:
        with open(files[0], "a") as markdown:
            markdown.write("\n" + series[0])
        files += series[1]
    report = Report(experiment, experiment_id, uri, rows, out, files, sweep_id=record.id if record else None)
    if log_to_mlflow:
        tags[f"{REPORT_TAG}.runs"] = str(sum(r.runs for r in rows if r.run_id))
        report.run_id = tracking.log_report_run(uri, experiment_id, files, run_name=REPORT_RUN_NAME, tags=tags)
    return report
