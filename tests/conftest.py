"""Session-wide test set-up: the cache dir, the FAST training config and a temporary store; and the
MLflow fixtures the report, CLI, browser and end-to-end tests share (a populated fake sweep, a
sqlite store holding it, one real `mlflow server`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One cache for the whole test session; scripts/test.sh points it into the checkout so
# numba's and DeepSpeed's compiled artefacts survive between runs.
os.environ.setdefault("PHISCALE_CACHE", str(ROOT / ".cache" / "phiscale"))
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")

import pytest  # noqa: E402
from support import background, recipe_lane  # noqa: E402
from support.runs import FAST  # noqa: E402
from support.tracking_servers import pg_server, server_cli_fixture, server_dir_fixture  # noqa: E402, F401


@pytest.hookimpl(trylast=True)  # after -m / -k have deselected
def pytest_collection_modifyitems(config, items):
    """The tests that wait on a long command go to the end, their commands start now in the idle CPU time
    (background); the all-models recipe test goes last of all, its training also starting now (recipe_lane)."""
    background.schedule(config, items)
    recipe_lane.schedule(config, items)


def pytest_unconfigure(config):
    background.stop(config)
    recipe_lane.stop(config)


@pytest.fixture
def store(tmp_path):
    """Overrides that send outputs and the MLflow store into tmp_path."""
    return [f"paths.root={tmp_path}/outputs", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"]


@pytest.fixture
def fast_overrides(store):
    """FAST + the temporary store, as `phiscale-train` arguments."""
    return [*FAST, *store]


@pytest.fixture
def fast_cfg(fast_overrides):
    """Compose the config `phiscale-train <FAST> <store> <extra>` would run."""
    from phiscale.config import compose_config

    def make(*extra: str):
        return compose_config([*fast_overrides, *extra])

    return make


# ---------------------------------------------------------------- MLflow: a fake sweep, a store, a server -----
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class FakeRun:
    """One training run as phiscale-train logs it; `top1_history` is val/top1 per epoch."""

    name: str
    tags: dict
    macs: float
    params: float
    top1_history: tuple[float, ...]
    images_per_s: float
    log_best: bool = True  # log val/top1_best (else the report must take the max of val/top1)
    running: bool = False
    hours: float = 1.0


# Sorted by MACs. Pareto front (top-1 vs MACs): every run but mobilenet_v1-w1.0 (beaten by
# efficientnet-phi0: fewer MACs, higher top-1) and the running efficientnet-phi3.
RUNS = (
    FakeRun("mobilenet_v2-w0.5", {"model": "mobilenet_v2", "family": "mobilenet_v2", "width_mult": "0.5",
            "resolution_mult": "1.0", "resolution": "224"}, 97e6, 1.97e6, (0.40, 0.60, 0.65), 900.0),
    FakeRun("efficientnet-phi0", {"model": "efficientnet", "family": "efficientnet", "phi": "0.0",
            "depth_mult": "1.0", "width_mult": "1.0", "resolution_mult": "1.0", "resolution": "224",
            "world_size": "2"}, 390e6, 5.3e6, (0.50, 0.70, 0.77), 400.0),
    FakeRun("mobilenet_v1-w1.0", {"model": "mobilenet_v1", "family": "mobilenet_v1", "width_mult": "1.0",
            "resolution": "224"}, 569e6, 4.2e6, (0.60, 0.70, 0.69), 700.0, log_best=False),
    FakeRun("efficientnet-phi1", {"model": "efficientnet", "family": "efficientnet", "phi": "1.0",
            "depth_mult": "1.2", "width_mult": "1.1", "resolution": "256"}, 700e6, 7.8e6,
            (0.55, 0.75, 0.79), 250.0),
    FakeRun("efficientnet-phi2", {"model": "efficientnet", "family": "efficientnet", "phi": "2.0",
            "depth_mult": "1.44", "width_mult": "1.21", "resolution_mult": "1.3225", "resolution": "296"},
            1.45e9, 11.0e6, (0.60, 0.78, 0.80), 150.0),
    FakeRun("efficientnet-phi3", {"model": "efficientnet", "family": "efficientnet", "phi": "3.0",
            "depth_mult": "1.728", "width_mult": "1.331", "resolution_mult": "1.52", "resolution": "340"},
            2.8e9, 16.0e6, (0.30, 0.62, 0.60), 80.0, log_best=False, running=True, hours=0.5),
)  # fmt: skip
EXPECTED_ORDER = [r.name for r in RUNS]
EXPECTED_PARETO = {r.name: r.name not in ("mobilenet_v1-w1.0", "efficientnet-phi3") for r in RUNS}


def populate(tracking_uri: str, experiment: str) -> str:
    """Create `experiment` with RUNS (and an earlier report run the report must skip); its id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from phiscale.tracking.store import artifact_location

    client = MlflowClient(tracking_uri)
    # artifacts beside a sqlite store, as phiscale's own experiments keep them: MLflow's default is ./mlruns
    # of the directory pytest runs in, where a report logged to this experiment left its files
    experiment_id = client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri, experiment))
    now = int(time.time() * 1000)
    for run in RUNS:
        start = now - int((run.hours if run.running else run.hours + 1) * HOUR_MS)
        created = client.create_run(experiment_id, run_name=run.name, tags=run.tags, start_time=start)
        run_id = created.info.run_id
        metrics = [
            Metric("model/macs_eval", run.macs, start, 0),
            Metric("model/params", run.params, start, 0),
        ]
        for epoch, top1 in enumerate(run.top1_history):
            metrics.append(Metric("val/top1", top1, start + epoch, epoch))
            if run.log_best:
                metrics.append(
                    Metric("val/top1_best", max(run.top1_history[: epoch + 1]), start + epoch, epoch)
                )
        for step, ips in enumerate((run.images_per_s / 2, run.images_per_s)):
            metrics.append(Metric("perf/images_per_s", ips, start + step, step * 10))
        client.log_batch(run_id, metrics=metrics)
        if not run.running:
            client.set_terminated(run_id, "FINISHED", end_time=start + int(run.hours * HOUR_MS))
    stale = client.create_run(experiment_id, run_name="report", tags={"phiscale.report": "true"})
    client.log_metric(stale.info.run_id, "model/macs_eval", 1.0)
    client.set_terminated(stale.info.run_id)
    return experiment_id


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (sqlite + proxied artifacts) on 127.0.0.1, one per test session."""
    from phiscale.server.process import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    with server:
        print(f"\nmlflow server ready at {server.url} after {server.startup_s:.1f} s")
        yield server


@pytest.fixture(scope="module")
def server_experiment(mlflow_server, request) -> tuple[str, str]:
    """(name, id) of an experiment populated with RUNS on the shared server, one per test module: the
    running run's device-hours are read against the time it was populated."""
    name = f"phiscale-report-{request.module.__name__.rpartition('.')[2]}"
    return name, populate(mlflow_server.url, name)


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory, fake_sweep) -> str:
    """One sqlite store per test module (creating one runs MLflow's migrations): the fake sweep in
    experiment "sweep", and an experiment "empty" without runs."""
    from mlflow.tracking import MlflowClient

    from phiscale.tracking.store import artifact_location

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    fake_sweep.populate(uri, "sweep")
    MlflowClient(uri).create_experiment("empty", artifact_location=artifact_location(uri, "empty"))
    return uri


@pytest.fixture(scope="session")
def fake_sweep():
    """The runs above, what the report should make of them, and `populate(uri, experiment)`."""
    from types import SimpleNamespace

    return SimpleNamespace(runs=RUNS, order=EXPECTED_ORDER, pareto=EXPECTED_PARETO, populate=populate)
