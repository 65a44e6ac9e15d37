"""Fixtures for the tracking tests: a real `mlflow server` a test can hang, kill and restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

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
