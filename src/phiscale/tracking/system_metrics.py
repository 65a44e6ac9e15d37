"""System metrics for MLflow's "System metrics" tab: CPU, memory, disk, network, and the GPUs the job owns.

Sampled on rank 0 every `tracking.system_metrics_s` seconds into the run's journal (so they survive
outages and continue, step after step, in the same run after a resume), under MLflow's own names
and `system/` prefix (mlflow/system_metrics: cpu_monitor, disk_monitor, network_monitor,
gpu_monitor), which is what its UI charts. GPUs are read through NVML (nvidia-ml-py) when it is
installed and CUDA is visible, and only the devices CUDA_VISIBLE_DEVICES gives this job.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

PREFIX = "system/"


def visible_gpus(nvml) -> list[tuple[int, object]]:
    """(index as the job numbers it, NVML handle) for each GPU the job may use."""
    count = nvml.nvmlDeviceGetCount()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [(i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    handles = []
    for i, token in enumerate(t.strip() for t in visible.split(",") if t.strip()):
        try:
            handle = (nvml.nvmlDeviceGetHandleByUUID(token) if token.startswith(("GPU-", "MIG-"))
                      else nvml.nvmlDeviceGetHandleByIndex(int(token)))
        except Exception:  # an id NVML does not know (e.g. a MIG slice): not ours to read
            continue
        handles.append((i, handle))
    return handles


class SystemMetrics:
    """A background sampler; `sample()` is one reading as {metric name: value}."""

    def __init__(self, log: Callable[[dict[str, float], int], None], interval_s: float, disk_path: Path,
                 first_step: int = 0) -> None:
        import psutil

        self._psutil = psutil
        self.log = log
        self.interval_s = interval_s
        self.disk_path = Path(disk_path)
        self.step = first_step
        self._net_start = psutil.net_io_counters()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpus = self._open_nvml()
        psutil.cpu_percent()  # the first call only starts psutil's interval

    def _open_nvml(self) -> list[tuple[int, object]]:
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
            return visible_gpus(pynvml)
        except Exception:  # no NVIDIA driver or no nvidia-ml-py: CPU-side metrics only
            return []

    def sample(self) -> dict[str, float]:
        ps = self._psutil
        memory = ps.virtual_memory()
        disk = ps.disk_usage(str(self.disk_path))
        net = ps.net_io_counters()
        values = {
            "cpu_utilization_percentage": ps.cpu_percent(),
            "system_memory_usage_megabytes": memory.used / 1e6,
            "system_memory_usage_percentage": memory.percent,
            "disk_usage_percentage": disk.percent,
            "disk_usage_megabytes": disk.used / 1e6,
            "disk_available_megabytes": disk.free / 1e6,
            "network_receive_megabytes": (net.bytes_recv - self._net_start.bytes_recv) / 1e6,
            "network_transmit_megabytes": (net.bytes_sent - self._net_start.bytes_sent) / 1e6,
        }
        for i, handle in self._gpus:
            nvml = self._nvml
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            values[f"gpu_{i}_memory_usage_megabytes"] = memory.used / 1e6
            values[f"gpu_{i}_memory_usage_percentage"] = 100.0 * memory.used / max(memory.total, 1)
            values[f"gpu_{i}_utilization_percentage"] = float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            try:
                values[f"gpu_{i}_power_usage_watts"] = nvml.nvmlDeviceGetPowerUsage(handle) / 1000
            except Exception:  # some boards do not report power
                pass
        return {PREFIX + k: float(v) for k, v in values.items()}

    def start(self) -> SystemMetrics:
        self._thread = threading.Thread(target=self._loop, name="phiscale-system-metrics", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.log(self.sample(), self.step)
            except Exception:  # a reading that fails (a vanished disk, a GPU reset) is skipped
                continue
            self.step += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
