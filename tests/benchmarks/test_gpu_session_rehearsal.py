"""`benchmarks/gpu_session.sh --cpu`: the GPU session's steps on this machine with tiny sizes, writing
the same result files; the resume step must continue one MLflow run (restarts=1)."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from support import background

ROOT = Path(__file__).resolve().parents[2]
RESULT_FILES = {"gpu_session.json", "report.md", "report.csv", "top1_vs_images_per_s.png", "session.log",
                "logs.tar.gz", "mlflow.db.gz"}
TRAINING = ("a_ddp", "b_compile", "c_zero1", "c_zero2", "c_zero3")
STEPS = ("kit", "ffcv", "images", "betons", "d_resume", *TRAINING, "e_bare", "f_eval_zero", "g_reshard", "report")
FIGURES = ("images_per_s", "step_time_ms", "data_wait_frac", "peak_memory_gib", "achieved_tflops")


# The rehearsal is one command: it runs in the session's background queue, its tests at the end (support/background.py).
pytestmark = pytest.mark.background("gpu-rehearsal")


@background.job("gpu-rehearsal")
def rehearse(dir: Path) -> tuple[list[str], dict[str, str]]:
    return ["bash", str(ROOT / "benchmarks" / "gpu_session.sh"), "--cpu"], {
        "PYTHON": sys.executable, "OUT": str(dir / "out"), "WORK": str(dir / "work"), "SLOWER": "4"}


@pytest.fixture(scope="module")
def rehearsal(request):
    done = background.succeeded(request.config, "gpu-rehearsal")
    return done.dir / "out", done.dir / "work", done.stdout


@pytest.mark.slow
def test_every_step_has_its_figures_or_a_recorded_skip(rehearsal):
    out, _, stdout = rehearsal
    assert {p.name for p in out.iterdir()} == RESULT_FILES, stdout[-3000:]
    summary = json.loads((out / "gpu_session.json").read_text())
    steps = summary["steps"]
    assert set(steps) == set(STEPS), sorted(steps)
    for name, step in steps.items():
        assert step["status"] in ("ok", "skipped"), f"{name}: {step['status']} ({step['note']})\n{step['log_tail']}"
        if step["status"] == "skipped":
            assert step["note"], f"{name} was skipped without a reason"
            continue
        if name in TRAINING:
            figures = step["figures"]
            assert step["mlflow_runs"] == 1 and figures["windows"] >= 2, (name, step)
            assert all(figures[k] > 0 for k in FIGURES), (name, figures)
            assert 0 <= figures["data_wait_frac"] <= 1 and figures["run_status"] == "finished", (name, figures)
            assert step["log_tail"], f"{name}: no log tail"
    # The CPU rehearsal skips exactly what needs CUDA (DeepSpeed) or minutes of C++ (compile).
    assert {n for n, s in steps.items() if s["status"] == "skipped"} == {"kit", "b_compile", "c_zero1", "c_zero2",
                                                                          "c_zero3", "f_eval_zero", "g_reshard"}
    assert all("composes" in steps[f"c_zero{n}"]["note"] and "NOT" not in steps[f"c_zero{n}"]["note"]
               for n in (1, 2, 3))
    bare = steps["e_bare"]["figures"]
    assert bare["bare_images_per_s"] > 0 and bare["loop_over_bare"] > 0, bare
    assert summary["ratios"]["phiscale_over_bare"] > 0 and summary["all_ok"]
    assert summary["settings"]["mode"] == "cpu" and summary["device"]["versions"]["torch"]
    assert summary["device"]["peak_bf16_dense_tflops"] is None and steps["a_ddp"]["figures"]["mfu"] is None


@pytest.mark.slow
def test_report_files_decode(rehearsal):
    out, _, _ = rehearsal
    with Image.open(out / "top1_vs_images_per_s.png") as png:
        png.load()
        assert png.format == "PNG" and png.size[0] > 100 and png.size[1] > 100
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert len(rows) >= 1 and "a_ddp" in (out / "report.md").read_text()
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"steps.tsv", "logs/a_ddp.log", "logs/d_resume.log", "logs/e_bare.log"} <= names, sorted(names)
    log = (out / "session.log").read_text()
    assert "phiscale GPU session done" in log and "-> a_ddp: ok" in log


@pytest.mark.slow
def test_resume_continued_one_mlflow_run(rehearsal, tmp_path):
    from mlflow.tracking import MlflowClient

    out, _, _ = rehearsal
    with gzip.open(out / "mlflow.db.gz") as src, (tmp_path / "mlflow.db").open("wb") as dst:
        shutil.copyfileobj(src, dst)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("gpu-session")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'a_ddp'")
    assert len(runs) == 1, f"the resume made {len(runs)} runs named a_ddp"
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["restarts"] == "1"
    restarts = client.get_metric_history(run.info.run_id, "run/restarts")
    assert [m.value for m in restarts] == [0.0, 1.0] and 0 < restarts[1].step < 28, restarts
    summary = json.loads((out / "gpu_session.json").read_text())
    resume = summary["steps"]["d_resume"]
    assert resume["rc"] == 137 and "SIGKILL" in resume["note"], resume
    assert resume["figures"]["same_run"] and resume["figures"]["final_step"] == 28, resume["figures"]
