"""The all-models recipe test's training as a background lane (tests/end_to_end/test_digits_recipe.py).

Training every model with the digits recipe is about 20 CPU-minutes, while the rest of the suite
leaves about half of the 2 cores idle (servers starting, SLURM scheduling, outages waited out, one
busy thread most of the time). So as soon as the session knows it will run the recipe test, its
training starts here at the lowest CPU priority (support/idle_priority.py: it takes the idle time, the other
tests keep theirs), and the test itself runs last and waits for what is left. The processes are the
ones the test always ran: `phiscale-train <model>` with the defaults, one thread each, two at a
time; only when they run changes, not what they compute (on one thread a run's numbers do not depend
on the machine's load).

conftest.py calls `schedule` after collection and `stop` when the session ends.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.idle_priority import start_idle
from support.runs import NO_MODEL, TRAIN

RECIPE_TEST = "tests/end_to_end/test_digits_recipe.py::test_every_model_reaches_the_target_with_the_default_recipe"
PARALLEL = 2
# Largest first, so the two workers finish close together (the longest job starts at once).
# No `model=efficientnet model.phi=0`: under the recipe it is efficientnet_b0 weight for weight
# (test_phi_0_under_the_recipe_is_efficientnet_b0_weight_for_weight).
MODELS: dict[str, list[str]] = {
    "efficientnet-phi2": ["model=efficientnet", "model.phi=2"],
    "efficientnet-phi1.5": ["model=efficientnet", "model.phi=1.5"],
    "efficientnet-phi1": ["model=efficientnet", "model.phi=1"],
    "efficientnet_b1": ["model=efficientnet_b1"],
    "efficientnet-phi0.5": ["model=efficientnet", "model.phi=0.5"],
    "efficientnet_b0": ["model=efficientnet_b0"],
    "mobilenet_v3_large": ["model=mobilenet_v3_large"],
    "mobilenet_v2": ["model=mobilenet_v2"],
    "mobilenet_v1": ["model=mobilenet_v1"],
    "mobilenet_v3_small": ["model=mobilenet_v3_small"],
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
LANE = pytest.StashKey["Lane"]()


@dataclass(frozen=True)
class Trained:
    """One model's `phiscale-train` process: its exit code, summary.json's facts and its log."""

    returncode: int
    top1: float | None
    epochs: int | None
    seconds: float
    log: Path


class Lane:
    """MODELS trained with the recipe's defaults, PARALLEL at a time, niced, into `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started = time.monotonic()
        self.passed = False
        self._stopped = False
        self._starting = threading.Lock()  # a process starts, or the lane stops: never both at once
        self._processes: list[subprocess.Popen] = []
        self._pool = ThreadPoolExecutor(PARALLEL, thread_name_prefix="recipe-lane")
        self.futures: dict[str, Future[Trained]] = {
            name: self._pool.submit(self._train, name, overrides) for name, overrides in MODELS.items()}

    def _train(self, name: str, overrides: list[str]) -> Trained:
        out, log = self.root / name, self.root / f"{name}.log"
        cmd = [TRAIN, *overrides, "trainer.progress_bar=false", f"run_name={name}", f"paths.output_dir={out}",
               f"tracking.uri=sqlite:///{self.root}/{name}.db",  # one store each: no lock
               NO_MODEL]
        started = time.monotonic()
        with log.open("w") as sink:
            with self._starting:
                if self._stopped:  # the session ended before this model's turn
                    return Trained(-1, None, None, 0.0, log)
                process = start_idle(cmd, stdout=sink, stderr=subprocess.STDOUT, env=os.environ | ONE_THREAD)
                self._processes.append(process)
            returncode = process.wait()
        summary_path = out / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        return Trained(returncode, summary.get("best_val_top1"), summary.get("epoch"), time.monotonic() - started, log)

    def stop(self) -> None:
        """End whatever still trains (an interrupted or partial session); remove the outputs of a pass."""
        with self._starting:
            self._stopped = True
        for process in self._processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.passed:
            shutil.rmtree(self.root, ignore_errors=True)


def schedule(config: pytest.Config, items: list[pytest.Item]) -> None:
    """If the recipe test is among the session's tests: move it last and start its training now."""
    recipe = [item for item in items if item.nodeid == RECIPE_TEST]
    if not recipe or config.option.collectonly:
        return
    items.remove(recipe[0])
    items.append(recipe[0])
    lane(config)


def lane(config: pytest.Config) -> Lane:
    """The session's lane (a test run by itself in a way that skipped `schedule` starts one now)."""
    if LANE not in config.stash:
        config.stash[LANE] = Lane(Path(tempfile.mkdtemp(prefix="phiscale-recipe-lane-")))
    return config.stash[LANE]


def stop(config: pytest.Config) -> None:
    if LANE in config.stash:
        config.stash[LANE].stop()
