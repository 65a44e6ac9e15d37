"""Start-up of phiscale's commands: the demo's first line, first step and exit, and every `--help`, beside a
bare `python -c "import torch"` measured in the same run.

Each is a cold start (a new process), timed from this script: `phiscale-train experiment=digits_demo
trainer.max_steps=1` to its first line of output, to its first training step (Lightning's line that the
step budget is reached: the one step is done) and to its exit, in a fresh output dir and a fresh sqlite
store each time; each console script with `--help`. Rounds interleave all of them, so that other load
on the machine falls on each alike; one round first, not counted, builds what a first run builds once
(the digits files, numba's cache, the empty-store template). Prints per command the median, min and max
over the rounds and the median's ratio to the bare `import torch`, then `first step: X s (median of N)`.
Goal (issue 31), on 2 idle cores: first line <= 1.5 s, first step <= 3.5 s, exit <= 6 s, each `--help`
<= 0.5 s. Where the time goes: `python -X importtime -c "import phiscale.cli.train"`, and
tests/test_startup_imports.py for what each command may import.

    .venv/bin/python benchmarks/startup.py                 # 5 rounds
    .venv/bin/python benchmarks/startup.py --rounds 3 --no-help
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
DEMO = ["experiment=digits_demo", "trainer.max_steps=1", "trainer.progress_bar=false"]
# Lightning's line once fit has taken its step budget (lightning/pytorch/loops/fit_loop.py): the one step is done.
FIRST_STEP = re.compile(r"`Trainer\.fit` stopped: `max_steps=1` reached")
GOALS_S = {"first line": 1.5, "first step": 3.5, "exit": 6.0, "--help": 0.5}  # issue 31, 2 idle cores


def timed(cmd: list[str], marks: dict[str, Callable[[str], bool]] | None = None) -> dict[str, float]:
    """Seconds from the start of `cmd` to its first line, to the first line each mark matches, and to
    its exit, read from its output as it comes (stdout and stderr, unbuffered as on a terminal)."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen: dict[str, float] = {}
    lines: list[str] = []
    for line in process.stdout:
        now = time.perf_counter() - started
        lines.append(line)
        seen.setdefault("first line", now)
        for name, match in (marks or {}).items():
            if name not in seen and match(line):
                seen[name] = now
    process.wait()
    seen["exit"] = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (rc {process.returncode}):\n{''.join(lines)[-3000:]}")
    missing = set(marks or {}) - set(seen)
    if missing:
        sys.exit(f"{' '.join(cmd)} never printed {sorted(missing)}:\n{''.join(lines)[-3000:]}")
    return seen


def demo(root: Path) -> dict[str, float]:
    """One cold `phiscale-train` of one step, in its own output dir and sqlite store under `root`."""
    root.mkdir(parents=True)
    cmd = [str(BIN / "phiscale-train"), *DEMO, f"paths.root={root}", f"tracking.uri=sqlite:///{root}/mlflow.db"]
    return timed(cmd, {"first step": lambda line: bool(FIRST_STEP.search(line))})


def one_round(work: Path, index: int, with_help: bool) -> dict[str, float]:
    times = {"python -c 'import torch'": timed([sys.executable, "-c", "import torch"])["exit"]}
    times |= {f"phiscale-train: {name}": s for name, s in demo(work / f"round{index}").items()}
    if with_help:
        times |= {f"{script} --help": timed([str(BIN / script), "--help"])["exit"] for script in SCRIPTS}
    return times


def goal(name: str) -> float | None:
    if name.endswith("--help"):
        return GOALS_S["--help"]
    return GOALS_S.get(name.removeprefix("phiscale-train: "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="counted cold starts of each (default 5)")
    parser.add_argument("--no-help", dest="help", action="store_false", help="time the demo only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phiscale-startup-") as tmp:
        work = Path(tmp)
        print("warm-up round (not counted): builds the digits files, numba's cache, the store template", flush=True)
        one_round(work, 0, args.help)
        rounds = []
        for index in range(1, args.rounds + 1):
            rounds.append(one_round(work, index, args.help))
            print(f"round {index}/{args.rounds}: first step {rounds[-1]['phiscale-train: first step']:.2f} s", flush=True)
    names = list(rounds[0])
    median = {name: statistics.median(r[name] for r in rounds) for name in names}
    torch_s = median["python -c 'import torch'"]
    width = max(map(len, names))
    print(f"\n{'command':<{width}}  median     min     max  / import torch  goal (2 idle cores)")
    for name in names:
        values = [r[name] for r in rounds]
        target = goal(name)
        verdict = "" if target is None else f"<= {target:g} s: {'met' if median[name] <= target else 'NOT met'}"
        print(f"{name:<{width}}  {median[name]:6.2f}  {min(values):6.2f}  {max(values):6.2f}  "
              f"{median[name] / torch_s:13.2f}  {verdict}")
    print(f"\nfirst line: {median['phiscale-train: first line']:.2f} s (median of {len(rounds)})")
    print(f"first step: {median['phiscale-train: first step']:.2f} s (median of {len(rounds)}; "
          f"{median['phiscale-train: first step'] / torch_s:.2f} x a bare `import torch`, {torch_s:.2f} s)")
    print(f"exit: {median['phiscale-train: exit']:.2f} s (median of {len(rounds)})")


if __name__ == "__main__":
    main()
