"""phiscale.slurm.env reads a job's SLURM variables, refuses a layout that cannot train, and asks
scontrol to requeue a job."""

from __future__ import annotations

import os
import shutil

import pytest

from phiscale.errors import PhiscaleError
from phiscale.slurm.env import check_slurm_layout, device_count, requeue, slurm_env, tasks_per_node

# What a task of `sbatch --nodes=2 --ntasks-per-node=2 --array=0-3` sees on its second requeue.
ARRAY_TASK = {
    "SLURM_JOB_ID": "1007",
    "SLURM_JOB_NAME": "phiscale-sweep",
    "SLURM_ARRAY_JOB_ID": "1004",
    "SLURM_ARRAY_TASK_ID": "3",
    "SLURM_RESTART_COUNT": "2",
    "SLURM_NNODES": "2",
    "SLURM_NTASKS": "4",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_PROCID": "3",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NODELIST": "n[1-2]",
}


def test_array_task_environment_is_read():
    job = slurm_env(ARRAY_TASK)
    assert job is not None
    assert (job.job_id, job.array_job_id, job.array_task_id, job.restart_count) == ("1007", "1004", 3, 2)
    assert (job.nnodes, job.ntasks, job.ntasks_per_node) == (2, 4, 2)
    assert (job.procid, job.localid, job.nodeid, job.node_list) == (3, 1, 1, "n[1-2]")
    assert job.run_key == "1004_3"  # the same on every requeue of this array task
    assert job.cpus_per_task is None, "no --cpus-per-task: SLURM sets no SLURM_CPUS_PER_TASK"
    assert slurm_env({**ARRAY_TASK, "SLURM_CPUS_PER_TASK": "6"}).cpus_per_task == 6


def test_outside_slurm_there_is_no_job():
    assert slurm_env({"HOME": "/root"}) is None


def test_first_run_of_a_plain_job():
    job = slurm_env({"SLURM_JOB_ID": "12", "SLURM_NNODES": "1", "SLURM_TASKS_PER_NODE": "4"})
    assert (job.restart_count, job.array_task_id, job.ntasks_per_node, job.run_key) == (0, None, 4, "12")


def test_tasks_per_node_without_ntasks_per_node_comes_from_slurm_tasks_per_node():
    assert tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert slurm_env({"SLURM_JOB_ID": "1", "SLURM_TASKS_PER_NODE": "2(x2)"}).ntasks_per_node == 2
    assert slurm_env({"SLURM_JOB_ID": "1", "SLURM_TASKS_PER_NODE": "2,1"}).ntasks_per_node is None
    # Inside an srun step, the step's layout wins over the allocation's.
    env = {"SLURM_JOB_ID": "1", "SLURM_TASKS_PER_NODE": "4", "SLURM_STEP_TASKS_PER_NODE": "1"}
    assert slurm_env(env).ntasks_per_node == 1


def test_matching_layout_passes_and_returns_the_job(tmp_path):
    job = check_slurm_layout(2, 2, tmp_path / "run", ARRAY_TASK)
    assert job.run_key == "1004_3"
    assert (tmp_path / "run").is_dir()


def test_ntasks_per_node_not_equal_to_devices_names_both(tmp_path):
    with pytest.raises(PhiscaleError) as err:
        check_slurm_layout(4, 2, tmp_path, ARRAY_TASK)
    msg = str(err.value)
    assert "SLURM_NTASKS_PER_NODE=2" in msg and "trainer.devices=4" in msg and "--ntasks-per-node=4" in msg
    assert "\n" not in msg


def test_num_nodes_mismatch_names_both(tmp_path):
    with pytest.raises(PhiscaleError, match=r"SLURM_NNODES=2 but trainer.num_nodes=1.*--nodes=1"):
        check_slurm_layout(2, 1, tmp_path, ARRAY_TASK)


def test_uneven_tasks_per_node_is_refused(tmp_path):
    env = {"SLURM_JOB_ID": "5", "SLURM_NNODES": "2", "SLURM_TASKS_PER_NODE": "2,1"}
    with pytest.raises(PhiscaleError, match=r"uneven.*--ntasks-per-node=2"):
        check_slurm_layout(2, 2, tmp_path, env)


def test_auto_devices_and_interactive_allocations_skip_the_task_check(tmp_path):
    assert check_slurm_layout("auto", 2, tmp_path, ARRAY_TASK) is not None
    interactive = {
        **ARRAY_TASK,
        "SLURM_JOB_NAME": "bash",
    }  # salloc / srun --pty bash: Lightning ignores SLURM
    assert check_slurm_layout(8, 1, tmp_path, interactive).interactive


def test_device_lists_count_devices(tmp_path):
    check_slurm_layout([0, 1], 2, tmp_path, ARRAY_TASK)
    check_slurm_layout("0,1", 2, tmp_path, ARRAY_TASK)
    with pytest.raises(PhiscaleError, match="trainer.devices='many'"):
        check_slurm_layout("many", 2, tmp_path, ARRAY_TASK)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir_names_the_key_non_root(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(PhiscaleError, match=r"paths.output_dir=.*not writable.*shares"):
        check_slurm_layout(2, 2, locked / "run", ARRAY_TASK)


def test_output_dir_that_is_a_file_names_the_key(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(PhiscaleError, match=r"paths.output_dir=.*taken.*not writable.*every node shares"):
        check_slurm_layout(2, 2, tmp_path / "taken", ARRAY_TASK)


def test_outside_slurm_only_the_output_dir_is_checked(tmp_path):
    assert check_slurm_layout(8, 4, tmp_path / "x", {}) is None
    with pytest.raises(PhiscaleError, match="paths.output_dir") as err:
        (tmp_path / "f").write_text("")
        check_slurm_layout(1, 1, tmp_path / "f", {})
    assert "every node shares" not in str(err.value)


def test_a_variable_that_is_not_a_number_is_named():
    with pytest.raises(PhiscaleError, match=r"SLURM_ARRAY_TASK_ID='x' is not an integer; is this really a SLURM job"):
        slurm_env({**ARRAY_TASK, "SLURM_ARRAY_TASK_ID": "x"})
    with pytest.raises(PhiscaleError, match=r"cannot parse SLURM tasks-per-node '2\(y3\)'"):
        tasks_per_node("2(y3)")


@pytest.mark.parametrize(
    ("devices", "count"),
    [(None, None), ("auto", None), ("-1", None), (-1, None), (3, 3), ("2", 2), ("0,1,3", 3), ([0, 1], 2)],
)
def test_trainer_devices_as_a_count(devices, count):
    assert device_count(devices) == count


def test_a_refused_requeue_is_a_warning_not_a_crash(tmp_path, monkeypatch):
    if shutil.which("scontrol") is None:
        pytest.skip("needs SLURM's scontrol on PATH")
    (tmp_path / "slurm.conf").write_text("")  # a controller nobody runs: scontrol refuses at once
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    with pytest.warns(UserWarning, match=r"(?s)`scontrol requeue 1004_3` failed: .*configuration file"):
        assert requeue(slurm_env(ARRAY_TASK)) is False
