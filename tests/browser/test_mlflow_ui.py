"""The MLflow UI as its users see it, after one real short `phiscale-train` run: headless Chromium
(driven through its DevTools protocol, waiting on what the page shows) opens the experiment page and
the run page and finds the training view: the run in the runs table with its datasets and val/top1,
the run's val/top1 chart, its dataset inputs, and the System metrics tab. Screenshots of each page go
to the test's tmp dir. On a server locked by phiscale-server (basic auth), the admin sees the runs and
a browser without credentials is refused.

What MLflow 3.17.2's UI does (read in mlflow/server/js/build, main.*.js and experimentPage chunks):
- a global GenAI / Model training switch decides the experiment page's view; it is read from the
  URL's `?workflowType=` and else the browser's localStorage (`mlflow.workflowType`), default GenAI;
  the experiment's `mlflow.experimentKind` tag is read only behind a feature flag the build turns off.
- the runs table shows no metric column until one is chosen (Columns, or Sort, which adds it).
- a run page's charts are drawn as they scroll into view; the chart search box filters them.
- basic auth: credentials in the page URL (http://user:pw@host/) load the page, but the UI's own
  fetch() calls then fail ("Request cannot be constructed from a URL that includes credentials");
  an Authorization header on every request (DevTools Network.setExtraHTTPHeaders), as a browser
  sends once its login dialog was answered, works. Without one, headless Chromium ends on its error
  page with the navigation's responseStatus 401.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from support.chromium import Chromium
from support.runs import FAST, Training

pytestmark = [pytest.mark.slow, pytest.mark.browser]

TRAIN_TIMEOUT_S = 600
EXPERIMENT = "ui"
REGISTERED = "ui-net"
TRAINING_DATASET = "digits-train"
# What only MLflow's GenAI overview shows (its charts of traces); the training view has none of it.
GENAI_OVERVIEW = ("Token Usage", "Tokens per Trace")
SYSTEM_METRICS = ("cpu_utilization_percentage", "system_memory_usage_megabytes", "disk_usage_percentage",
                  "network_receive_megabytes")  # fmt: skip
CLOSE_ASSISTANT = 'button[data-component-id="mlflow.assistant.chat_panel.close"]'
MIN_SCREENSHOT_BYTES = 20_000  # a blank 1600x1000 PNG is a few kB


@dataclass(frozen=True)
class TrainedRun:
    server: str
    experiment_id: str
    run_id: str
    run_name: str
    run_url: str  # the run link phiscale-train printed
    experiment_url: str  # the "all runs" link it printed
    val_top1: float  # the run's last val/top1, as MLflow holds it
    model_id: str  # the run's logged model (registered as REGISTERED)


@pytest.fixture(scope="module")
def trained(mlflow_server, tmp_path_factory) -> TrainedRun:
    """One real short training run tracked to the session's `mlflow server`, system metrics every second."""
    out = tmp_path_factory.mktemp("ui-run") / "run"
    args = [*FAST, f"tracking.uri={mlflow_server.url}", f"tracking.experiment={EXPERIMENT}",
            "tracking.system_metrics_s=1", f"paths.output_dir={out}", f"tracking.register={REGISTERED}"]  # fmt: skip
    training = Training(args, out.parent / "train.log")
    assert training.wait(TRAIN_TIMEOUT_S) == 0, training.output()[-3000:]
    printed = re.findall(r"phiscale: MLflow run (http://\S+)", training.output())
    experiment_links = re.findall(r"phiscale: all runs (http://\S+)", training.output())
    assert printed and experiment_links, f"phiscale-train printed no run links:\n{training.output()[-2000:]}"

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    # The System metrics tab charts `system/` metrics: one sample a second, steps 0, 1, 2, ...
    for name in SYSTEM_METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, f"system/{name}")]
        assert len(steps) >= 2 and sorted(steps) == list(range(len(steps))), f"system/{name}: steps {steps}"
    # the tensor model `model`; tracking.register also logs `model-images` (tests/tracking/test_image_model.py)
    (logged,) = [m for m in client.search_logged_models([experiment.experiment_id]) if m.name == "model"]
    return TrainedRun(mlflow_server.url, experiment.experiment_id, run.info.run_id, run.info.run_name,
                      printed[-1], experiment_links[-1], run.data.metrics["val/top1"], logged.model_id)  # fmt: skip


@pytest.fixture
def browser(tmp_path):
    """A fresh headless Chromium (a new profile: nothing remembered from an earlier visit)."""
    with Chromium(tmp_path / "profile", width=1920, height=1080) as chromium:
        yield chromium


def screenshot(browser: Chromium, path: Path) -> Path:
    browser.screenshot(path)
    assert path.stat().st_size > MIN_SCREENSHOT_BYTES, f"{path} is {path.stat().st_size} bytes: a blank page?"
    print(f"\nscreenshot: {path}")
    return path


def which_view(run_name: str) -> str:
    """JavaScript: 'runs' once the runs table lists the run, 'genai' once the GenAI overview shows."""
    return f"""(() => {{ const text = document.body ? document.body.innerText : '';
        if (text.includes('Run Name') && text.includes({json.dumps(run_name)})) return 'runs';
        if ({json.dumps(list(GENAI_OVERVIEW))}.some(t => text.includes(t))) return 'genai';
        return null; }})()"""


def row_text(run_name: str) -> str | None:
    """JavaScript: the text of the run's row in the runs table (the grid splits a row into a pinned
    part and a scrolling part: both carry the row's `row-index`)."""
    return f"""(() => {{ const rows = Array.from(document.querySelectorAll('[role=row][row-index]'));
        const mine = rows.find(r => r.innerText.includes({json.dumps(run_name)}));
        return mine ? rows.filter(r => r.getAttribute('row-index') === mine.getAttribute('row-index'))
            .map(r => r.innerText).join('\\n') : null; }})()"""


def tab(name: str) -> str:
    return f"js:Array.from(document.querySelectorAll('[role=tab]')).find(e => e.innerText.trim() === {json.dumps(name)})"


def chart_drawn(series: str) -> str:
    """JavaScript: the page shows the chart legend `series` and has drawn at least one line."""
    return f"""document.body.innerText.includes({json.dumps(series)})
        && document.querySelectorAll('.js-plotly-plot .scatterlayer .trace path.js-line').length > 0"""


def test_the_experiment_link_phiscale_prints_opens_the_training_runs(trained, browser, tmp_path):
    """A user follows the experiment link phiscale-train printed in a browser that has never been to
    MLflow: the runs table, not MLflow's GenAI overview (the link says workflowType=machine_learning)."""
    browser.open(trained.experiment_url)
    view = browser.wait_for(which_view(trained.run_name), "the runs table or the GenAI overview")
    shot = screenshot(browser, tmp_path / "experiment-page.png")
    assert view == "runs", f"{trained.experiment_url} opens MLflow's GenAI overview ({shot}), not the runs table"


def test_a_bare_experiment_url_still_opens_the_genai_view(trained, browser):
    """What the link's parameter is for: MLflow 3.17.2 ignores the experiment's mlflow.experimentKind tag
    (feature-flagged off) and opens a bare experiment URL on its GenAI overview in a fresh browser. If this
    fails, MLflow honours the tag now and the parameter can go."""
    browser.open(f"{trained.server}/#/experiments/{trained.experiment_id}")
    assert browser.wait_for(which_view(trained.run_name), "the runs table or the GenAI overview") == "genai"


def test_the_runs_table_lists_the_run_its_datasets_and_val_top1(trained, browser, tmp_path):
    # The experiment page in Model training mode: what the UI's switch opens (it navigates to this URL).
    url = trained.experiment_url
    browser.open(url)
    assert browser.wait_for(which_view(trained.run_name), "the runs table or the GenAI overview") == "runs", url
    browser.wait_for_text(trained.run_name, TRAINING_DATASET, "Training", "phiscale-train")
    # No metric column until one is chosen: sort by val/top1, which adds its column (as a user would).
    browser.click('[data-testid="sort-select-dropdown"]', "the runs table's Sort menu")
    browser.click('[data-testid="sort-select-val/top1"]', "val/top1 in the Sort menu")
    value = repr(trained.val_top1)  # the table prints the full value, as JavaScript writes a double
    browser.wait_for_text("Sort: val/top1", value)
    headers = browser.evaluate("Array.from(document.querySelectorAll('[role=columnheader]')).map(e => e.innerText.trim())")
    assert "val/top1" in headers, f"no val/top1 column in the runs table: {headers}"
    row = browser.evaluate(row_text(trained.run_name))
    assert row and value in row, f"the run's row does not show its val/top1 {value}: {row!r}"
    assert not any(t in browser.text() for t in GENAI_OVERVIEW), "the GenAI overview, not the runs table"

    browser.click(CLOSE_ASSISTANT, "the MLflow Assistant's close button")  # the table gets the width
    browser.evaluate(f"""Array.from(document.querySelectorAll('[role=gridcell],[role=cell]'))
        .find(e => e.innerText.trim() === {json.dumps(value)}).scrollIntoView({{inline: 'center'}})""")
    screenshot(browser, tmp_path / "experiment.png")


def test_the_run_page_shows_val_top1_its_dataset_and_system_metrics(trained, browser, tmp_path):
    browser.open(trained.run_url)  # the link phiscale-train printed at the end of the run
    browser.wait_for_text(trained.run_name, "Overview", "Model metrics", "System metrics", "Datasets",
                          TRAINING_DATASET, "val/top1", repr(trained.val_top1), "system/cpu_utilization_percentage")
    browser.click(CLOSE_ASSISTANT, "the MLflow Assistant's close button")
    screenshot(browser, tmp_path / "run.png")

    browser.click(tab("Model metrics"), "the run's Model metrics tab")
    browser.click('input[placeholder="Search metric charts"]', "the chart search box")
    browser.type_text("val/top1")
    browser.wait_for(chart_drawn(f"{trained.run_name} (val/top1)"), "the run's val/top1 chart")
    screenshot(browser, tmp_path / "run-val-top1.png")

    browser.click(tab("System metrics"), "the run's System metrics tab")
    for name in SYSTEM_METRICS:
        browser.wait_for(chart_drawn(f"{trained.run_name} (system/{name})"), f"the system/{name} chart")
    screenshot(browser, tmp_path / "run-system-metrics.png")


def test_the_run_page_lists_its_logged_model_and_the_registry_its_versions_and_best(trained, browser, tmp_path):
    browser.open(trained.run_url)
    browser.wait_for_text(trained.run_name, "Logged models")
    # The section names the model ("model") and links to its page, whose URL carries the model id.
    link = f"Array.from(document.querySelectorAll('a')).some(a => a.href.includes({json.dumps(trained.model_id)}))"
    browser.wait_for(link, f"a link to logged model {trained.model_id} on the run page")
    screenshot(browser, tmp_path / "run-logged-model.png")
    browser.open(f"{trained.server}/#/models/{REGISTERED}")
    text = browser.wait_for_text(REGISTERED, "Version 1")
    assert "best" in text, f"the registered model page shows no best alias:\n{text[:2000]}"
    screenshot(browser, tmp_path / "registered-model.png")


def test_the_runs_page_lists_a_sweeps_runs(mlflow_server, server_experiment, fake_sweep, browser, tmp_path):
    """The fake sweep the report reads (conftest.RUNS), on the runs page of a plain MLflow experiment."""
    _, experiment_id = server_experiment
    browser.open(f"{mlflow_server.url}/#/experiments/{experiment_id}/runs")
    browser.wait_for_text("Run Name", *fake_sweep.order)
    screenshot(browser, tmp_path / "sweep-runs.png")


def test_a_locked_server_shows_its_runs_to_the_admin_and_refuses_strangers(pg_server, browser, tmp_path):
    """phiscale-server's basic auth in front of the UI: the admin (its password from DIR) signs in
    and sees the runs; a browser without credentials gets a 401 and no UI."""
    client = MlflowClient(pg_server.url)  # signed in as the admin (the pg_server fixture)
    experiment_id = client.create_experiment("locked-ui", tags={"mlflow.experimentKind": "custom_model_development"})
    run = client.create_run(experiment_id, run_name="seen-by-the-admin")
    client.log_metric(run.info.run_id, "val/top1", 0.5)
    client.set_terminated(run.info.run_id)
    page = f"{pg_server.url}/#/experiments/{experiment_id}?workflowType=machine_learning"

    browser.open(page)
    status = "(performance.getEntriesByType('navigation')[0] || {}).responseStatus"
    assert browser.wait_for(status, "the navigation's HTTP status") == 401
    assert "seen-by-the-admin" not in browser.text() and "Run Name" not in browser.text()

    token = base64.b64encode(f"admin:{pg_server.admin_password}".encode()).decode()
    browser.call("Network.enable")
    browser.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {token}"})
    browser.open(page)
    browser.wait_for_text("Run Name", "seen-by-the-admin", "admin")
    screenshot(browser, tmp_path / "locked-experiment.png")
