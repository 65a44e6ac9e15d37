"""System metrics: MLflow's names under `system/`, real readings of this machine, steps that go on."""

from __future__ import annotations

import time

from phiscale.tracking.system_metrics import PREFIX, SystemMetrics, visible_gpus


def test_a_reading_has_mlflows_names_and_plausible_values(tmp_path):
    reading = SystemMetrics(lambda values, step: None, interval_s=1, disk_path=tmp_path).sample()
    assert all(k.startswith(PREFIX) for k in reading)
    assert 0 <= reading["system/cpu_utilization_percentage"] <= 100
    assert 0 < reading["system/system_memory_usage_percentage"] < 100
    assert reading["system/disk_available_megabytes"] > 0
    assert reading["system/network_receive_megabytes"] >= 0


def test_the_sampler_logs_steps_from_where_an_earlier_attempt_stopped(tmp_path):
    logged = []
    sampler = SystemMetrics(lambda values, step: logged.append(step), interval_s=0.05, disk_path=tmp_path,
                            first_step=7).start()
    deadline = time.monotonic() + 60
    while len(logged) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    sampler.stop()
    assert logged[:3] == [7, 8, 9]


class FakeNvml:
    """NVML's three calls visible_gpus makes, over four devices (the real library needs a driver)."""

    def nvmlDeviceGetCount(self):
        return 4

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"dev{i}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return f"uuid:{uuid}"


def test_only_the_gpus_the_job_was_given_are_read(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [i for i, _ in visible_gpus(FakeNvml())] == [0, 1, 2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus(FakeNvml()) == [(0, "dev2"), (1, "dev3")], "numbered as the job sees them"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc")
    assert visible_gpus(FakeNvml()) == [(0, "uuid:GPU-abc")]
