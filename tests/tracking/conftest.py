"""Fixtures for the tracking tests: a real `mlflow server` a test can hang, kill and restart; the
digits demo trained once with its model registered; a path where `import phiscale` fails."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import background
from support.runs import TRAIN

from phiscale.server.process import MlflowServer


class Store:
    """One real MLflow server on a fixed port and data dir, which a test can hang (SIGSTOP), kill
    (SIGKILL, no goodbye) and start again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = MlflowServer(root).start()
        self.port = self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _group(self, sig: int) -> None:
        os.killpg(self.server._process.pid, sig)

    def hang(self) -> None:
        self._group(signal.SIGSTOP)

    def resume(self) -> None:
        self._group(signal.SIGCONT)

    def kill(self) -> None:
        process = self.server._process
        self._group(signal.SIGKILL)
        process.wait(timeout=60)
        self.server._process = None

    def ensure_up(self) -> None:
        if self.server._process is None:
            self.server = MlflowServer(self.root, port=self.port).start()
        else:
            self.resume()

    def stop(self) -> None:
        if self.server._process is not None:
            self.resume()
            self.server.stop()


@pytest.fixture(scope="module")
def server_module(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("server"))
    yield store
    store.stop()


@pytest.fixture
def server(server_module):
    server_module.ensure_up()
    yield server_module
    server_module.ensure_up()  # whatever the test did to it, the next one finds it serving


@dataclass(frozen=True)
class RegisteredRun:
    """The digits demo's run in a sqlite store, its model registered as `name` (and `name`-images)."""

    uri: str
    name: str
    stdout: str


REGISTERED_JOB = "registered-digits"  # the tests that read it carry @pytest.mark.background(REGISTERED_JOB)


@background.job(REGISTERED_JOB)
def train_and_register(dir: Path) -> tuple[list[str], dict[str, str]]:
    """`make demo`'s run (experiment=digits_demo: ~98% best val top-1 in ~30 s) with tracking.register=digits-net,
    trained once per session in its background queue (support/background.py)."""
    return [TRAIN, "experiment=digits_demo", "trainer.progress_bar=false", "data.num_workers=1",
            f"paths.root={dir}/outputs", f"tracking.uri=sqlite:///{dir}/mlflow.db", "tracking.register=digits-net"], {}


@pytest.fixture(scope="session")
def registered_digits(request) -> RegisteredRun:
    """The digits demo's run, its model registered: what the model, registry and serving tests read."""
    done = background.succeeded(request.config, REGISTERED_JOB)
    return RegisteredRun(f"sqlite:///{done.dir}/mlflow.db", "digits-net", done.stdout)


@pytest.fixture(scope="session")
def without_phiscale(tmp_path_factory) -> Path:
    """A directory to put first on sys.path (or PYTHONPATH): there `import phiscale` raises ImportError,
    as for a user who has MLflow and torch but not phiscale."""
    root = tmp_path_factory.mktemp("no-phiscale")
    (root / "phiscale").mkdir()
    (root / "phiscale" / "__init__.py").write_text("raise ImportError('phiscale is not installed here')\n")
    return root
