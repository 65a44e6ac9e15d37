"""Params from the config, tags from the environment (the SLURM job through phiscale.slurm.env)."""

from __future__ import annotations

from phiscale.tracking.tags import PARAM_VALUE_LIMIT, environment_tags, flatten_config


def test_the_config_flattens_to_dotted_params_within_mlflows_limit():
    flat = flatten_config({"model": {"phi": 1.5, "name": "efficientnet"}, "seed": 0, "note": "x" * 10_000})
    assert flat == {"model.phi": "1.5", "model.name": "efficientnet", "seed": "0", "note": "x" * PARAM_VALUE_LIMIT}


def test_environment_tags_name_the_slurm_job_when_there_is_one(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    outside = environment_tags(world_size=2)
    assert outside["world_size"] == "2" and outside["host"] and not any(k.startswith("slurm") for k in outside)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    inside = environment_tags(world_size=1)
    assert {k: inside[k] for k in inside if k.startswith("slurm")} == {
        "slurm_job_id": "42", "slurm_array_job_id": "40", "slurm_array_task_id": "2", "slurm_restart_count": "1"}
