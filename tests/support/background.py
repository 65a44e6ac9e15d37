"""The one long command of a few tests, started when the session starts and run in the cores' idle time.

The recipe lane's idea (support/recipe_lane.py) for any test whose slow part is one command it waits
for: while the rest of the suite leaves about a third of the 2 cores idle (servers starting, SLURM
scheduling, outages waited out, one busy thread most of the time), the command runs at the lowest CPU
priority (support/idle_priority.py: it takes the idle time, the other tests keep theirs), and its test runs at the
end and reads what the command left. The command is the one the test always ran, with the same
arguments; only when it runs changes, not what it computes or what the test asserts.

A test module names its command with `@job(NAME)` (a function of a fresh directory that writes what the
command needs there and returns its argv, and any environment to add), and marks the tests that read it
`@pytest.mark.background(NAME)`; `result(config, NAME)` waits for the command and returns what it did.
conftest.py calls `schedule` after collection (which queues the commands of the selected tests and
moves those tests to the end) and `stop` when the session ends. The commands run one after another,
not all at once: their start-up burst together (each imports torch, some train two ranks) slowed the
foreground tests beside it (a browser fixture 62 s instead of 25 s); one at a time beside the recipe
lane's two, they still finish well before the tests that read them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.idle_priority import start_idle

ROOT = Path(__file__).resolve().parents[2]
MARK = "background"
RUNNING = pytest.StashKey[dict]()
STOPPED = pytest.StashKey[bool]()
_STARTING = threading.Lock()  # the queue's thread and a test that asks first never both start a job
Command = Callable[[Path], "tuple[list[str], dict[str, str]]"]
_COMMANDS: dict[str, Command] = {}


def job(name: str) -> Callable[[Command], Command]:
    """Register `command` (a function of the job's directory: argv and extra environment) as `name`."""

    def register(command: Command) -> Command:
        _COMMANDS[name] = command
        return command

    return register


@dataclass(frozen=True)
class Finished:
    """What a job's command did: its exit code, its output, its directory and how long it took."""

    returncode: int
    stdout: str
    stderr: str
    dir: Path
    seconds: float


class Running:
    """One job's command, started now at the lowest priority, its output into its directory."""

    def __init__(self, name: str) -> None:
        self.name, self.dir = name, Path(tempfile.mkdtemp(prefix=f"phiscale-background-{name}-"))
        argv, env = _COMMANDS[name](self.dir)
        self.started = time.monotonic()
        self._out, self._err = (self.dir / "stdout.txt").open("w"), (self.dir / "stderr.txt").open("w")
        self.process = start_idle(argv, stdout=self._out, stderr=self._err, cwd=ROOT, env=os.environ | env)
        self._waited = threading.Lock()
        self.passed = False

    def wait(self, timeout: float) -> Finished:
        with self._waited:
            try:
                returncode = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop()
                pytest.fail(f"background job {self.name} still running after {timeout:.0f} s; output in {self.dir}")
            self._out.close()
            self._err.close()
        return Finished(returncode, (self.dir / "stdout.txt").read_text(), (self.dir / "stderr.txt").read_text(),
                        self.dir, time.monotonic() - self.started)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        if self.passed:
            shutil.rmtree(self.dir, ignore_errors=True)


def _running(config: pytest.Config) -> dict[str, Running]:
    if RUNNING not in config.stash:
        config.stash[RUNNING] = {}
    return config.stash[RUNNING]


def start(config: pytest.Config, name: str) -> Running:
    """The session's job `name`, started now if it is not running yet (a test run by itself)."""
    with _STARTING:
        return _start(config, name)


def _start(config: pytest.Config, name: str) -> Running:
    """`start`, its caller holding _STARTING."""
    running = _running(config)
    if name not in running:
        if name not in _COMMANDS:
            raise KeyError(f"no background job {name!r}: register its command with @support.background.job")
        running[name] = Running(name)
    return running[name]


def result(config: pytest.Config, name: str, timeout: float = 3600) -> Finished:
    """What job `name`'s command did, once it has ended."""
    return start(config, name).wait(timeout)


def succeeded(config: pytest.Config, name: str, details: Callable[[Finished], str] | None = None) -> Finished:
    """What job `name`'s command did, asserting that it exited 0 (`details`: what more to show when not);
    its directory then goes when the session ends (`passed`)."""
    done = result(config, name)
    assert done.returncode == 0, (f"background job {name} exited {done.returncode}; its output in {done.dir}\n"
                                  f"{details(done) if details else ''}{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    passed(config, name)
    return done


def passed(config: pytest.Config, name: str) -> None:
    """The test that read job `name` passed: its directory goes when the session ends."""
    start(config, name).passed = True


def schedule(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Queue the job of every selected test marked `background`, and move those tests to the end."""
    marked = [item for item in items if item.get_closest_marker(MARK)]
    if config.option.collectonly:
        return
    for item in marked:
        items.remove(item)
    items.extend(marked)
    names = list(dict.fromkeys(item.get_closest_marker(MARK).args[0] for item in marked))
    if names:
        threading.Thread(target=_one_after_another, args=(config, names), daemon=True, name="background-queue").start()


def _one_after_another(config: pytest.Config, names: list[str]) -> None:
    """Start each job once the one before it has ended (a job a test already started is not started again)."""
    for name in names:
        if name not in _COMMANDS:  # its test's result() says so
            continue
        with _STARTING:
            if config.stash.get(STOPPED, False):
                return
            job = _start(config, name)
        job.process.wait()


def stop(config: pytest.Config) -> None:
    with _STARTING:
        config.stash[STOPPED] = True  # the queue starts nothing more
    for running in _running(config).values():
        running.stop()
