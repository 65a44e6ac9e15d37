"""Profiling: MACs of a 3x3 conv and a depthwise-separable pair by hand, memory on meta == on CPU,
and the CLI table."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from phiscale.cli.profile import _configs, build_parser, main
from phiscale.models import PRESET_NAMES, build_model
from phiscale.models.profile import count_macs, profile_model


def test_conv_and_depthwise_separable_macs_match_the_hand_count():
    conv = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    assert count_macs(conv, 32) == 1_769_472  # 32*32 * 64 * 3*3*3
    depthwise = nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
    pointwise = nn.Conv2d(3, 64, 1, bias=False)
    assert count_macs(depthwise, 32) == 27_648  # 32*32 * 3 * 3*3
    assert count_macs(pointwise, 32) == 196_608  # 32*32 * 64 * 3
    assert count_macs(nn.Sequential(depthwise, pointwise), 32) == 224_256


def test_profile_counts_flops_as_twice_macs_and_output_bytes():
    prof = profile_model(nn.Conv2d(3, 64, 3, padding=1, bias=False), 32)
    assert (prof.params, prof.macs, prof.flops) == (1728, 1_769_472, 2 * 1_769_472)
    assert prof.activation_bytes == 64 * 32 * 32 * 4  # one float32 output map


def test_meta_profile_equals_real_forward():
    torch.manual_seed(0)
    real = build_model("mobilenet_v3_small")
    with torch.device("meta"):
        meta = build_model("mobilenet_v3_small")
    assert profile_model(meta, 64) == profile_model(real, 64)
    assert real.training, "profiling must restore the training flag"


def test_cli_defaults_to_every_preset():
    assert [c["name"] for c in _configs(build_parser().parse_args([]))] == list(PRESET_NAMES)


def test_cli_prints_a_markdown_table(capsys):
    assert main(["--format", "markdown", "--model", "mobilenet_v2", "efficientnet_b0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model") and "published MACs" in lines[0] and "MACs Δ" in lines[0]
    assert lines[1].startswith("|:--")
    assert lines[2].split("|")[1].strip() == "mobilenet_v2" and "3,504,872" in lines[2]
    assert "5,288,548" in lines[3] and "+0.00%" in lines[3]


def test_cli_reports_bad_input_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "efficientnet", "--phi", "-1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("(phi=0 is EfficientNet-B0; try phi=1)") and "error: phi=-1.0" in err[-1]
