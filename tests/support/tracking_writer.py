"""The writers of the tracking chaos test: real processes, each logging a training-shaped run through
phiscale's own path (RunLogger, mode online: journal + background sender), stopping at gates the test
opens so that it can time its outages by events.

`start_writer(plan)` forks one from a multiprocessing forkserver that has imported phiscale.tracking
and MLflow's client once (sixteen processes importing Lightning and MLflow each would spend a minute
of a 2-core machine before the first step). Its stdout and stderr go to `plan.log`.

Before step N of a gate (N, NAME) the writer prints `waiting at gate NAME (step N-1 journaled, last
seq S)` and waits until the file `plan.gates_dir/NAME` exists, then prints `passed gate NAME`. At the
end it closes the run ("finished") and prints one JSON line: {"left": entries unsent when the drain
timed out, "run_id": ...}.

What every run must hold is a function of (index, step) (`expected_*` below): the test compares
MLflow against it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PACE_S = 0.025  # the work of one training step (the load's pace, not a wait on anything)
GATE_POLL_S = 0.05
GATE_TIMEOUT_S = 900.0
EVERY_STEP = ("train/loss", "train/lr", "perf/images_per_s")
VAL_EVERY = 50  # val/top1 at steps 49, 99, ... (an epoch's end)
ARTIFACT_AT = 300  # a checkpoint-like file logged mid-run
PRELOAD = ["phiscale.tracking", "mlflow.tracking", "mlflow.entities"]


def expected_metrics(index: int, step: int) -> dict[str, float]:
    values = {"train/loss": 2.5 / (1 + step) + index / 1000, "train/lr": 0.1 * (1 - step / 1000),
              "perf/images_per_s": 1000.0 + index + step % 7}  # fmt: skip
    if (step + 1) % VAL_EVERY == 0:
        values["val/top1"] = min(1.0, 0.1 + step / 500 + index / 10_000)
    return values


def expected_steps(key: str, steps: int) -> list[int]:
    return [s for s in range(steps) if key in expected_metrics(0, s)]


def expected_params(index: int) -> dict[str, str]:
    return {"writer.index": str(index), "model.name": "chaos", "optim.lr_per_256": "0.1",
            **{f"chaos.knob_{k:02d}": str(k * index) for k in range(20)}}  # fmt: skip


def expected_artifacts() -> set[str]:
    return {"config.yaml", f"checkpoints/step-{ARTIFACT_AT:04d}.txt", "summary.json"}


@dataclass(frozen=True)
class WriterPlan:
    index: int
    output_dir: Path
    log: Path
    uri: str
    experiment: str
    steps: int
    gates: tuple[tuple[int, str], ...]  # (step, name): wait for gates_dir/name before that step
    gates_dir: Path
    drain_timeout_s: float


def start_writer(plan: WriterPlan) -> multiprocessing.Process:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)  # used when the forkserver starts (once per test session)
    process = context.Process(target=run_writer, args=(plan,), name=f"writer-{plan.index:02d}")
    process.start()
    return process


def run_writer(plan: WriterPlan) -> None:
    """The writer process's body (see the module docstring)."""
    log = os.open(plan.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    from phiscale.tracking import RunLogger

    out = plan.output_dir
    out.mkdir(parents=True, exist_ok=True)
    logger = RunLogger(output_dir=out, tracking_uri=plan.uri, experiment=plan.experiment,
                       run_name=f"writer-{plan.index:02d}", params=expected_params(plan.index),
                       tags={"chaos.writer": str(plan.index)}, mode="online", heartbeat_s=5, retry_max_s=2,
                       connect_timeout_s=5)  # fmt: skip
    logger.open()
    (out / "config.yaml").write_text(f"writer: {plan.index}\n")
    logger.log_artifact(out / "config.yaml")
    gates = dict(plan.gates)
    for step in range(plan.steps):
        if step in gates:
            _wait_at_gate(gates[step], step, plan.gates_dir, logger)
        time.sleep(PACE_S)
        logger.log_metrics(expected_metrics(plan.index, step), step=step)
        if step == ARTIFACT_AT:
            checkpoint = out / "checkpoints" / f"step-{step:04d}.txt"
            checkpoint.parent.mkdir(exist_ok=True)
            checkpoint.write_text(f"writer {plan.index} step {step}\n")
            logger.log_artifact(checkpoint, "checkpoints")
    (out / "summary.json").write_text(json.dumps({"writer": plan.index, "steps": plan.steps}))
    logger.log_artifact(out / "summary.json")
    left = logger.close("finished", drain_timeout_s=plan.drain_timeout_s)
    print(json.dumps({"left": left, "run_id": logger.run_id}), flush=True)


def _wait_at_gate(name: str, step: int, gates_dir: Path, logger) -> None:
    print(f"waiting at gate {name} (step {step - 1} journaled, last seq {logger.journal.next_seq - 1})", flush=True)
    deadline = time.monotonic() + GATE_TIMEOUT_S
    while not (gates_dir / name).exists():
        if time.monotonic() > deadline:
            sys.exit(f"gate {name} did not open within {GATE_TIMEOUT_S:.0f} s")
        time.sleep(GATE_POLL_S)
    print(f"passed gate {name}", flush=True)
