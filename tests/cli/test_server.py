"""phiscale-server's command line: the one-line refusals of bad arguments and of a folder without a server."""

from __future__ import annotations

import subprocess


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    return lines[0]


def test_stop_and_status_refuse_a_folder_without_a_server(tmp_path, server_cli):
    for command in ("stop", "status"):
        line = one_line_error(server_cli(command, "--dir", str(tmp_path)))
        assert "holds no tracking server" in line


def test_bad_ports_and_workers_are_refused(tmp_path, server_cli):
    assert "--port 70000 is not a TCP port" in one_line_error(
        server_cli("start", "--dir", str(tmp_path), "--port", "70000")
    )
    assert "--workers 0 must be at least 1" in one_line_error(
        server_cli("start", "--dir", str(tmp_path), "--workers", "0")
    )
