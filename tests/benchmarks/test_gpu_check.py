"""benchmarks/gpu_check.py's CPU-side paths: its card table, argument checks and the no-CUDA error."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
    ],
)
def test_peak_bf16_flops_by_card_name(gpu_check, name, tflops):
    assert gpu_check.peak_bf16_flops(name) == tflops * 1e12


def test_unknown_card_has_no_peak(gpu_check):
    assert gpu_check.peak_bf16_flops("Tesla T4") is None


def test_bad_step_count_is_refused(gpu_check, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps", "0"])
    assert "--steps must be >= 1" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_without_cuda_it_fails_in_one_line(gpu_check, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main([])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no CUDA device visible" in err and err.count("\n") == 1, err
