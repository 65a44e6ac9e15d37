"""A reduced scaling-series study on Fashion-MNIST, end to end as a user runs it: `phiscale-sweep list`
names the series, `submit --local --max-parallel 2` trains them two at a time (a few batches each; the
φ = 0 base once, shared by both series), every run is tagged with its series and level, and
`phiscale-report --sweep` draws one curve per series, the table per level, and names the rounding of
any point whose measured MACs leave its level's target by more than 15%."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from support import background
from support.runs import NO_MODEL

from phiscale.report.series import MACS_TOLERANCE, PLOT_SERIES

STUDY = """\
name: series_smoke
base: [data=fashion_mnist, model=efficientnet, model.width_mult=0.5, model.depth_mult=0.5,
       data.base_resolution=64, trainer.max_epochs=1, trainer.limit_train_batches=3,
       trainer.limit_val_batches=2, trainer.progress_bar=false, data.batch_size=32]
levels: [0, 1]
series:
  width: {model.alpha: 1, model.beta: 1.41421356, model.gamma: 1}
  resolution: {model.alpha: 1, model.beta: 1, model.gamma: 1.41421356}
"""


@background.job("series-study")
def submit_the_series(root) -> tuple[list[str], dict[str, str]]:
    """The three runs, two at a time: started with the session, in the cores' idle time (support/background.py)."""
    (root / "series_smoke.yaml").write_text(STUDY)
    store = [f"paths.root={root}/out", f"tracking.uri=sqlite:///{root}/mlflow.db", "tracking.experiment=series",
             NO_MODEL]
    return [sys.executable, "-m", "phiscale.cli.sweep", "submit", str(root / "series_smoke.yaml"), *store, "--local",
            "--max-parallel", "2"], {}


@pytest.mark.slow
@pytest.mark.background("series-study")
def test_a_reduced_series_study_trains_tags_and_reports_a_curve_per_series(request, tmp_path):
    study = tmp_path / "series_smoke.yaml"
    study.write_text(STUDY)
    listing = subprocess.run([sys.executable, "-m", "phiscale.cli.sweep", "list", str(study)],
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert "series: width, resolution at φ = 0, 1" in listing.stdout
    assert re.search(r"^0\s+width,resolution\s", listing.stdout, re.M), "the φ = 0 base is one shared point"

    done = background.result(request.config, "series-study")
    tmp_path, uri = done.dir, f"sqlite:///{done.dir}/mlflow.db"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"run \d \(\d/3\)", line)]
    ends = [i for i, line in enumerate(lines) if re.match(r"run \d: ok after", line)]
    assert len(starts) == 3 and len(ends) == 3 and starts[1] < ends[0], f"two at a time:\n{done.stdout}"

    (record_path,) = (tmp_path / "out" / "sweeps").glob("*/sweep.json")
    record = json.loads(record_path.read_text())
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("series").experiment_id],
                              f"tags.`phiscale.sweep_id` = '{record['id']}'")
    tags = sorted((r.data.tags["series"], r.data.tags["series_level"]) for r in runs if "sweep_index" in r.data.tags)
    assert tags == [("resolution", "1"), ("width", "1"), ("width,resolution", "0")]
    assert all(r.info.status == "FINISHED" for r in runs)

    out = tmp_path / "report"
    report = subprocess.run([sys.executable, "-m", "phiscale.cli.report", "--sweep", record["id"], "--root",
                             str(tmp_path / "out"), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr[-2000:]
    markdown = (out / "report.md").read_text()
    assert "## Scaling series" in markdown and (out / PLOT_SERIES).is_file()
    table = markdown.split("## Scaling series")[1]
    header = next(line for line in table.splitlines() if line.startswith("| φ |"))
    assert header.split("|")[2:4] == [" width ", " resolution "], "one column (and one curve) per series"
    for series, level in (("width", 1), ("resolution", 1)):
        measured = float(re.search(rf"^\| {level} \|(.*)$", table, re.M).group(1)
                         .split("|")[["width", "resolution"].index(series)].split("(×")[1].split(")")[0])
        within = abs(measured / 2.0 - 1.0) <= MACS_TOLERANCE
        named = f"{series} φ={level}: measured ×{measured:.2f}" in table
        assert within != named, f"{series} φ={level}: ×{measured} must be within 15% of ×2 or named:\n{table}"
    background.passed(request.config, "series-study")
