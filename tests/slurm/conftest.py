"""The local SLURM testbed for `slurm`-marked tests: started once per session, stopped if we started it.

Tests get a `slurm` helper: `slurm.sbatch(script, *args, cwd=...)` submits a batch script (a path
or its text), `slurm.wait(job_id, timeout)` polls until every task of the job has ended and
returns their scontrol records. When a test that used it fails, the report carries the tails of
slurmctld's and each slurmd's log, and of the output file (`--output=`) of every job it submitted.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTBED = ROOT / "slurm" / "testbed"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue")
END_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT",
}  # fmt: skip


def _fields(line: str) -> dict[str, str]:
    """`Key=Value Key2=Value2 ...` (scontrol -o / jobcomp) -> dict; values never contain spaces here."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


@dataclass
class Slurm:
    dir: Path
    env: dict[str, str]
    started_here: bool
    jobs: list[str] = field(default_factory=list)
    # job id -> (the submitting test's node id, its --output path pattern, the submit dir)
    outputs: dict[str, tuple[str, str, Path]] = field(default_factory=dict)

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=check, timeout=60)

    def sbatch(
        self,
        script: str | Path,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        script_args: Sequence[str] = (),
    ) -> str:
        """Submit `script` (a file, or the text of one) from `cwd` with sbatch options `args` and the
        script's own arguments `script_args`; `env` adds to the environment the job inherits.
        Returns the job id."""
        if not Path(str(script)).is_file():
            path = cwd / f"job-{len(self.jobs)}.sbatch"
            path.write_text(str(script))
            script = path
        result = subprocess.run(
            ["sbatch", "--parsable", *args, str(script), *script_args],
            cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, f"sbatch {script} failed: {result.stderr.strip()}\n{self.log_tails()}"
        job_id = result.stdout.strip().split(";")[0]
        self.jobs.append(job_id)
        output = next((a.split("=", 1)[1] for a in args if a.startswith(("--output=", "-o="))), None)
        if output:
            test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
            self.outputs[job_id] = (test, output, cwd)
        return job_id

    def output_files(self, job_id: str) -> list[Path]:
        """The output file(s) of a job submitted with --output= (%j, %A -> the id, %a -> every task)."""
        if job_id not in self.outputs:
            return []
        _, pattern, cwd = self.outputs[job_id]
        pattern = pattern.replace("%j", job_id).replace("%A", job_id).replace("%a", "*").replace("%x", "*")
        path = Path(pattern) if Path(pattern).is_absolute() else cwd / pattern
        return sorted(path.parent.glob(path.name))

    def output_tails(self, test: str, lines: int = 60) -> str:
        """The last lines of every output file of the jobs `test` (a pytest node id) submitted."""
        out = []
        for job_id, (submitter, _, _) in self.outputs.items():
            if submitter != test:
                continue
            files = self.output_files(job_id) or [Path(f"(no output file for job {job_id} yet)")]
            for f in files:
                text = f.read_text(errors="replace").splitlines()[-lines:] if f.is_file() else []
                out.append(f"--- tail of {f} (job {job_id}) ---\n" + "\n".join(text))
        return "\n".join(out)

    def records(self, job_id: str) -> list[dict[str, str]]:
        """scontrol's view of the job (one record per array task); jobcomp's once it was purged."""
        shown = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if shown.returncode == 0 and shown.stdout.strip():
            return [_fields(line) for line in shown.stdout.splitlines() if line.strip()]
        comp = self.dir / "log" / "jobcomp.log"
        lines = comp.read_text().splitlines() if comp.exists() else []
        return [_fields(line) for line in lines if f"JobId={job_id} " in line][-1:]

    def wait(self, job_id: str, timeout: float) -> list[dict[str, str]]:
        """Poll until every task of `job_id` is in an end state; fail with the logs after `timeout` s."""
        deadline = time.monotonic() + timeout
        records: list[dict[str, str]] = []
        while time.monotonic() < deadline:
            records = self.records(job_id)
            if records and all(r.get("JobState") in END_STATES for r in records):
                return records
            time.sleep(1)
        states = [(r.get("JobId"), r.get("JobState"), r.get("Reason")) for r in records]
        self.run("scancel", job_id, check=False)
        pytest.fail(f"job {job_id} not finished within {timeout:.0f}s (states {states})\n{self.log_tails()}")

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for log in [self.dir / "log" / "slurmctld.log", *sorted((self.dir / "log").glob("slurmd-*.log"))]:
            text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(missing)"]
            out.append(f"--- tail of {log} ---\n" + "\n".join(text))
        return "\n".join(out)


@pytest.fixture(scope="session")
def slurm() -> Slurm:
    if os.geteuid() != 0:
        pytest.skip("the SLURM testbed needs root (slurmd and munged); run the slurm tests as root")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(
            f"SLURM binaries missing ({', '.join(missing)}): apt-get install munge slurmctld slurmd slurm-client"
        )
    state_dir = Path(os.environ.get("PHISCALE_SLURM_DIR", "/tmp/phiscale-slurm"))
    pid = state_dir / "run" / "slurmctld.pid"
    running = pid.exists() and Path(f"/proc/{pid.read_text().strip()}").exists()
    started = subprocess.run(["bash", str(TESTBED / "start.sh")], capture_output=True, text=True, timeout=180)
    helper = Slurm(state_dir, {**os.environ, "SLURM_CONF": str(state_dir / "slurm.conf")}, not running)
    if started.returncode != 0:
        pytest.fail(f"slurm/testbed/start.sh failed:\n{started.stdout}{started.stderr}\n{helper.log_tails()}")
    yield helper
    if helper.started_here:
        subprocess.run(["bash", str(TESTBED / "stop.sh")], capture_output=True, text=True, timeout=120)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    helper = item.funcargs.get("slurm") if hasattr(item, "funcargs") else None
    if report.failed and isinstance(helper, Slurm):
        report.sections.append(("SLURM daemon logs", helper.log_tails()))
        outputs = helper.output_tails(item.nodeid)
        if outputs:
            report.sections.append(("SLURM job output", outputs))
    return report
