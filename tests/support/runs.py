"""Real `phiscale-train` processes, and waiting on their journals: events, never fixed sleeps."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from phiscale.tracking.journal import CURSOR, JOURNAL, read_entries, tracking_dir

BIN = Path(sys.executable).parent
TRAIN, SYNC = str(BIN / "phiscale-train"), str(BIN / "phiscale-sync")
# No MLflow model at a run's end (its torch.export is ~3 s, a fifth of a FAST run), for every test run but
# the one that checks the model and its registration (tests/tracking/test_models.py turns it back on with
# tracking.register=NAME, which logs the model whatever tracking.log_model says).
NO_MODEL = "tracking.log_model=false"
# A CPU training config that runs in seconds: tiny model, the embedded digits, two short epochs.
FAST = [
    "model=mobilenet_v3_small",
    "model.width_mult=0.5",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=6",
    "trainer.log_every_n_steps=2",
    "trainer.ckpt_every_n_steps=4",
    "trainer.progress_bar=false",
    "data.batch_size=32",
    "data.num_workers=1",
    "optim=sgd_cosine",
    NO_MODEL,
]


class Training:
    """A real `phiscale-train` process with its output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._file = open(log, "w")  # noqa: SIM115 (closed in wait/kill)
        self.process = subprocess.Popen([TRAIN, *args], stdout=self._file, stderr=subprocess.STDOUT, env=env)
        self.ended_at: float | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def done(self) -> bool:
        if self.process.poll() is not None and self.ended_at is None:
            self.ended_at = time.time()
        return self.process.poll() is not None

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"training did not end within {timeout:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.05)
        self._file.close()
        return self.process.returncode

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self._file.close()


def wait_for(predicate, timeout: float, what: str, training: Training | None = None,
             details: Callable[[], str] | None = None):
    """Poll `predicate` every 0.05 s until it is truthy; fail after `timeout` s, or at once if the
    training process ended while we waited for something it should do. The failure shows the
    training's output tail, or what `details()` returns (a job's log, the daemons' logs)."""
    def context() -> str:
        if details is not None:
            return "\n" + details()
        return f"\n{training.output()[-3000:]}" if training else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if training is not None and training.done() and not predicate():
            pytest.fail(f"training ended (rc {training.process.returncode}) before: {what}{context()}")
        time.sleep(0.05)
    pytest.fail(f"not within {timeout:.0f} s: {what}{context()}")


def journal_entries(output_dir: Path) -> list[dict]:
    return read_entries(tracking_dir(output_dir) / JOURNAL)[0]


def metric_points(output_dir: Path, key: str = "train/loss") -> list[tuple[int, int]]:
    """(step, journal time in ms) of every journaled value of `key`."""
    return [(step, t) for e in journal_entries(output_dir) if e["op"] == "metrics"
            for k, _, t, step in e["values"] if k == key]


def sent_seq(output_dir: Path) -> int:
    try:
        return json.loads((tracking_dir(output_dir) / CURSOR).read_text())["seq"]
    except (FileNotFoundError, ValueError):
        return -1


def histories(client, run_id: str) -> dict[str, list[int]]:
    """Every metric of a run: key -> its steps (sorted). The system/ metrics are sampled every
    tracking.system_metrics_s of wall time, so how many a run has depends on how fast it ran: they
    appear as their first step only (that they are there, not how many)."""
    run = client.get_run(run_id)
    steps = {key: sorted(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    return {key: got[:1] if key.startswith("system/") else got for key, got in steps.items()}
