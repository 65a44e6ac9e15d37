"""phiscale's processes make no calls home (MLflow's telemetry is off unless the user turns it on), and
the garbage collector's pauses through their start end with it running again."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import phiscale, mlflow.telemetry.utils as t, os; print(os.environ['MLFLOW_DISABLE_TELEMETRY'], t.MLFLOW_DISABLE_TELEMETRY.get())"


def _probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                            env={**clean, **env})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_importing_phiscale_turns_mlflow_telemetry_off_unless_the_user_turned_it_on():
    assert _probe() == "true True", "MLflow sees telemetry disabled in every phiscale process"
    assert _probe(MLFLOW_DISABLE_TELEMETRY="false") == "false False", "the user's choice wins"


# The collector's pauses (phiscale/__init__.py), in a fresh interpreter: a thread's pause overlaps
# phiscale-train's start-up pause, and the collector runs again only when both have ended, with what
# exists by then frozen (so that its passes skip it).
COLLECTOR = """
import gc, threading, phiscale
seen = [gc.isenabled()]
phiscale.pause_for_start_up()
seen.append(gc.isenabled())
inside, done = threading.Event(), threading.Event()
def sender():
    with phiscale.collector_paused():
        inside.set()
        done.wait()
thread = threading.Thread(target=sender)
thread.start()
inside.wait()
phiscale.end_start_up_pause()
seen.append(gc.isenabled())  # the thread's pause still holds
frozen = gc.get_freeze_count()
done.set()
thread.join()
seen.append(gc.isenabled())
phiscale.end_start_up_pause()  # a second end changes nothing
seen.append(gc.isenabled())
print(seen, gc.get_freeze_count() > frozen)
"""


def test_the_collector_runs_again_once_every_pause_has_ended_and_the_heap_is_frozen():
    result = subprocess.run([sys.executable, "-c", COLLECTOR], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[True, False, False, True, True] True", result.stdout
