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


def test_a_directory_that_cannot_be_made_and_no_auth_off_loopback_are_one_line(tmp_path, server_cli):
    assert "cannot use --dir /proc/nope: No such file or directory" in one_line_error(
        server_cli("start", "--dir", "/proc/nope")
    )
    refusal = one_line_error(server_cli("start", "--dir", str(tmp_path / "srv"), "--host", "0.0.0.0", "--no-auth"))
    assert "--no-auth with --host 0.0.0.0 would let anyone" in refusal and "127.0.0.1" in refusal
    assert not (tmp_path / "srv" / "phiscale-server.json").exists(), "refused before anything started"
    assert "no tracking server" in one_line_error(server_cli("user", "list", "--dir", str(tmp_path / "srv")))
