"""A two-stage study on the real SLURM testbed: one `phiscale-sweep submit` queues the search, the
scale stage behind it (--dependency=afterany) and the closer behind both; the whole study is killed
mid-search (`scancel` of everything) and resumed; nobody runs `status`, and in the end the search has
pruned its hopeless point, the scale runs train the winner's α, β, γ and the parent is FINISHED.
One test, not an uninterrupted study beside a killed one: the killed study runs every stage of the
uninterrupted one (its first search runs end untouched, the resumed closer closes the parent) and
the resume on top; the uninterrupted path end to end is tests/end_to_end/test_local_study.py.

Pruning is by construction, not luck: one search point trains with a learning rate 5000x the
recipe's and its val/loss is NaN (or huge) at the rung; the arrays run their tasks in index order
(--max-parallel 1), so that point meets the values of the points before it and is pruned (ASHA keeps
⌈n/η⌉ of n, sweeps/pruning.py).

    PHISCALE_SLURM_DIR=/tmp/phiscale-slurm-mine PHISCALE_SLURM_PORT=17817 pytest -m slurm tests/slurm/test_study.py
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from support.runs import NO_MODEL, wait_for
from support.slurm_sweeps import logs, sweep_cli

pytestmark = pytest.mark.slurm

HOPELESS = "optim.lr_per_256: 500"  # diverges within the first epoch


def study_file(hopeless: int) -> str:
    """4 search points at φ=1 (point `hopeless` diverges), early stopping on val/loss, then 2 φ values."""
    points = ["{model.alpha: 1.2, model.beta: 1.1, model.gamma: 1.15}",
              "{model.alpha: 1.1, model.beta: 1.15, model.gamma: 1.15}",
              "{model.alpha: 1.3, model.beta: 1.05, model.gamma: 1.15}",
              "{model.alpha: 1.15, model.beta: 1.1, model.gamma: 1.2}"]
    points[hopeless] = points[hopeless][:-1] + ", " + HOPELESS + "}"
    return ("name: chain\nbase: [data=digits, model=efficientnet, trainer.max_epochs=2, trainer.limit_train_batches=6,\n"
            "       trainer.limit_val_batches=3, data.num_workers=1, trainer.progress_bar=false]\nstages:\n"
            "  search:\n    base: [model.phi=1]\n    points:\n" + "".join(f"      - {p}\n" for p in points) +
            "    early_stop: {metric: val/loss, mode: min, rungs: [1], eta: 2}\n"
            "    select: {metric: val/top1_best, mode: max}\n"
            "  scale:\n    from: search\n    grid: {model.phi: [0, 0.5]}\n")


def submit(slurm, tmp_path: Path, hopeless: int) -> tuple[str, Path, str, dict]:
    (tmp_path / "chain.yaml").write_text(study_file(hopeless))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    store = [f"paths.root={tmp_path}/out", f"tracking.uri={uri}", "tracking.experiment=chain", NO_MODEL]
    done = sweep_cli(slurm, tmp_path, "submit", "chain.yaml", *store, "--max-parallel", "1", "--sbatch-arg=--time=60")
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_id = re.search(r"^sweep (\S+): 6 runs of chain", done.stdout, re.M).group(1)
    jobs = re.findall(r"queued SLURM array job (\d+)", done.stdout)
    closer = re.search(r"queued the closer, job (\d+)", done.stdout).group(1)
    assert len(jobs) == 2 and f"--array=4-5%1 --dependency=afterany:{jobs[0]} " in done.stdout, done.stdout
    return sweep_id, tmp_path / "out" / "sweeps" / sweep_id, uri, {"search": jobs[0], "scale": jobs[1],
                                                                       "closer": closer}


def closed(record_dir: Path, job: str) -> bool:
    log = record_dir / f"close-{job}.out"
    return log.is_file() and " closed: parent run " in log.read_text()


def runs_by_index(uri: str, sweep_id: str) -> dict[int, object]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("chain")
    runs = client.search_runs([experiment.experiment_id], f"tags.`phiscale.sweep_id` = '{sweep_id}'")
    return {int(r.data.tags["sweep_index"]): r for r in runs if "sweep_index" in r.data.tags}  # not the parent


def check_study_complete(uri: str, record_dir: Path, sweep_id: str, hopeless: int) -> dict:
    """4 search runs (the hopeless one pruned), 2 finished scale runs with the winner's α, β, γ, parent FINISHED."""
    from mlflow.tracking import MlflowClient

    record = json.loads((record_dir / "sweep.json").read_text())
    runs = runs_by_index(uri, sweep_id)
    assert sorted(runs) == [0, 1, 2, 3, 4, 5], logs(record_dir)
    search = {i: r for i, r in runs.items() if r.data.tags["phiscale.stage"] == "search"}
    scale = {i: r for i, r in runs.items() if r.data.tags["phiscale.stage"] == "scale"}
    assert sorted(search) == [0, 1, 2, 3] and sorted(scale) == [4, 5]
    pruned = {i for i, r in search.items() if "phiscale.pruned" in r.data.tags}
    assert hopeless in pruned and all(search[i].data.tags["phiscale.pruned"] == "1" for i in pruned), logs(record_dir)
    assert all(r.info.status == "FINISHED" for r in runs.values()), {i: r.info.status for i, r in runs.items()}
    parent = MlflowClient(uri).get_run(record["parent_run_id"])
    winner = search[record["winner"]["index"]]
    assert parent.info.status == "FINISHED", "the parent closed itself: nobody ran status"
    assert parent.data.tags["phiscale.search.winner"] == winner.info.run_id == record["winner"]["run_id"]
    assert record["winner"]["index"] not in pruned
    for run in scale.values():
        assert {k: run.data.params[k] for k in ("model.alpha", "model.beta", "model.gamma")} == {
            k: winner.data.params[k] for k in ("model.alpha", "model.beta", "model.gamma")}
    assert sorted(float(r.data.params["model.phi"]) for r in scale.values()) == [0.0, 0.5]
    assert record["epochs"]["full"] == 12 and record["epochs"]["spent"] == 12 - len(pruned), record["epochs"]
    return record


def test_a_study_killed_mid_search_resumes_to_the_end_with_its_pruned_runs_and_one_winner(slurm, tmp_path):
    started = time.monotonic()
    sweep_id, record_dir, uri, jobs = submit(slurm, tmp_path, hopeless=1)
    # Run 1 diverges and is pruned at its rung; kill everything once run 2 has a checkpoint (mid-search).
    def run_1_pruned() -> bool:
        run = runs_by_index(uri, sweep_id).get(1)
        return run is not None and "phiscale.pruned" in run.data.tags

    wait_for(run_1_pruned, 1200, "run 1 was not pruned", details=lambda: logs(record_dir) + slurm.log_tails())
    pruned_id = runs_by_index(uri, sweep_id)[1].info.run_id
    wait_for((record_dir / "points" / "2" / "checkpoints" / "last.ckpt").exists, 1200, "run 2 wrote no checkpoint",
             details=lambda: logs(record_dir) + slurm.log_tails())
    slurm.run("scancel", jobs["closer"], jobs["scale"], jobs["search"])  # the later stages first: none may start
    for job in jobs.values():
        slurm.wait(job, timeout=300)
    assert json.loads((record_dir / "sweep.json").read_text())["winner"] is None, "killed before the scale stage"

    resumed = sweep_cli(slurm, tmp_path, "resume", sweep_id, "--root", str(tmp_path / "out"), "--max-parallel", "1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # Run 2 was cancelled mid-run; 3 (and the scale stage) never started: cancelled while pending, or missing.
    assert re.search(r"resuming runs 2-5 \(2 cancelled, 3 (cancelled|missing), 4 (cancelled|missing), "
                     r"5 (cancelled|missing)\)", resumed.stdout), resumed.stdout
    closer = re.search(r"queued the closer, job (\d+)", resumed.stdout).group(1)
    wait_for(lambda: closed(record_dir, closer), 1800, f"the resumed {sweep_id} never closed",
             details=lambda: logs(record_dir) + slurm.log_tails())
    record = check_study_complete(uri, record_dir, sweep_id, hopeless=1)
    assert runs_by_index(uri, sweep_id)[1].info.run_id == pruned_id, "the pruned run was left alone"
    assert logs(record_dir).count("search winner run") == 1, "the winner was chosen once"
    again = sweep_cli(slurm, tmp_path, "resume", sweep_id, "--root", str(tmp_path / "out"))
    assert "is complete" in again.stdout, again.stdout
    print(f"study {sweep_id}: killed and resumed, closed {time.monotonic() - started:.0f} s after submit; "
          f"epochs {record['epochs']}")
