"""Reading SLURM from the outside: array task ids and Key=Value records as scontrol and the jobcomp log
write them, and failing soft (or with one clear line for sbatch) where there is no SLURM. The real
cluster is exercised in tests/slurm/test_sweep_lifecycle.py."""

from __future__ import annotations

import pytest

from phiscale.errors import PhiscaleError
from phiscale.slurm.queue import expand_task_ids, parse_records, submit, task_states


@pytest.mark.parametrize(("spec", "tasks"), [
    ("3", [3]), ("0-5,9%2", [0, 1, 2, 3, 4, 5, 9]), ("2-5,9", [2, 3, 4, 5, 9]), ("0-8:4", [0, 4, 8]),
    ("1,4,7", [1, 4, 7]),
])  # fmt: skip
def test_pending_array_remainders_expand_to_their_tasks(spec, tasks):
    assert expand_task_ids(spec) == tasks


def test_scontrol_and_jobcomp_lines_parse_into_fields():
    # Lines as the testbed writes them (scontrol show job -o; jobcomp/filetxt), trimmed.
    text = ("JobId=1 ArrayJobId=1 ArrayTaskId=2-5,9%2 ArrayTaskThrottle=2 JobName=s.sh JobState=PENDING "
            "Reason=JobHeldUser Dependency=(null)\n"
            "JobId=16 UserId=root(0) Name=phiscale-sweep JobState=COMPLETED ArrayJobId=16 ArrayTaskId=2 "
            "DerivedExitCode=0:0 ExitCode=0:0 \n\n")
    first, second = parse_records(text)
    assert (first["ArrayTaskId"], first["JobState"], first["Reason"]) == ("2-5,9%2", "PENDING", "JobHeldUser")
    assert (second["ArrayJobId"], second["ArrayTaskId"], second["UserId"]) == ("16", "2", "root(0)")


def test_without_slurm_states_are_unknown_and_sbatch_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol, no sbatch
    assert task_states({"12": [0, 1]}) == {}
    with pytest.raises(PhiscaleError, match="sbatch not found: submit from a SLURM login node, or .* --local"):
        submit(["--array=0-1", "x.sbatch"])


def test_a_host_without_a_cluster_gives_unknown_states(monkeypatch):
    """SLURM's commands installed but no cluster configured (this machine without the testbed's
    SLURM_CONF): scontrol fails at once; no states, no exception."""
    monkeypatch.delenv("SLURM_CONF", raising=False)
    assert task_states({"12": [0]}) == {}
