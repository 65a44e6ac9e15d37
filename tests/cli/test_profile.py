"""phiscale-profile: which models it profiles, its four output formats, and one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

from phiscale.cli.profile import _configs, build_parser, main, profile_rows
from phiscale.models import PRESET_NAMES


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


def test_phi_values_profile_the_formula_family_as_json(capsys):
    assert main(["--phi", "0", "1", "--format", "json"]) == 0
    phi0, phi1 = json.loads(capsys.readouterr().out)
    assert (phi0["model"], phi1["model"]) == ("efficientnet-phi0", "efficientnet-phi1")
    assert phi0["params"] == phi0["published_params"] == 5_288_548 and phi0["params_diff_pct"] == 0.0
    assert phi1["published_params"] is None and phi1["macs_diff_pct"] is None, "nothing published for phi=1"
    assert phi1["resolution"] == 258 and phi1["macs"] > 2 * phi0["macs"]
    assert phi0["flops"] == 2 * phi0["macs"]


def test_width_multipliers_as_csv_beside_the_papers_table(capsys):
    assert main(["--model", "mobilenet_v1", "--width-mult", "0.5", "1.0", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["model"] for r in rows] == ["mobilenet_v1-w0.5", "mobilenet_v1"]
    assert [r["published_macs"] for r in rows] == ["149000000", "569000000"]  # MobileNet v1, Table 6
    assert all(abs(float(r["macs_diff_pct"])) < 1.0 for r in rows), rows


def test_the_default_table_is_aligned_with_a_rule_under_the_header(capsys):
    assert main(["--model", "mobilenet_v3_small", "--resolution", "160"]) == 0
    header, rule, row = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("model") and set(rule) <= {"-", " "} and len(rule) == len(header) == len(row)
    assert row.split()[:2] == ["mobilenet_v3_small-r0.714286", "160"]  # 160 / 224 in the name
    assert row.split()[-2:] == ["-", "-"], "published figures are for 224 px only"


def test_meta_and_cpu_forward_passes_give_the_same_numbers():
    config = [{"name": "mobilenet_v3_small", "width_mult": 0.5, "resolution": 96}]
    meta, cpu = (profile_rows(config, device=d, progress=False) for d in ("meta", "cpu"))
    assert meta == cpu
