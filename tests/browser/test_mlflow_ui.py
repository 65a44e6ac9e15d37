"""Headless Chromium opens the MLflow UI of the shared test server and finds the sweep's runs."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# MLflow 3.17's React UI: `#/experiments/<id>` opens the GenAI overview; the runs table is /runs.
# --virtual-time-budget lets the page's fetches and renders finish before the DOM is dumped.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
]


def chromium(url: str, user_data_dir, *action: str, budget_ms: int) -> subprocess.CompletedProcess:
    args = [
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={user_data_dir}",
        f"--virtual-time-budget={budget_ms}",
        *action,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
@pytest.mark.browser
def test_mlflow_ui_lists_the_sweep_runs(mlflow_server, server_experiment, fake_sweep, tmp_path):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install chromium")
    _, experiment_id = server_experiment
    url = f"{mlflow_server.url}/#/experiments/{experiment_id}/runs"

    missing = fake_sweep.order
    for attempt, budget_ms in enumerate((20_000, 60_000)):
        result = chromium(url, tmp_path / f"profile-dom-{attempt}", "--dump-dom", budget_ms=budget_ms)
        text = re.sub(r"<[^>]+>", " ", result.stdout)
        missing = [name for name in fake_sweep.order if name not in text]
        if not missing:
            break
    assert result.returncode == 0, f"chromium failed: {result.stderr[-2000:]}"
    assert "MLflow" in result.stdout, "not the MLflow UI"
    assert not missing, f"runs not on the UI page {url}: {missing}"

    shot = tmp_path / "mlflow_ui.png"
    chromium(url, tmp_path / "profile-shot", f"--screenshot={shot}", budget_ms=20_000)
    assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot of {url}"
    print(f"\nscreenshot of the MLflow UI: {shot}")
