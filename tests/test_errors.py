"""User errors as one line: a console script wrapped in user_errors_as_one_line prints
`prog: error: <message>` and exits 2; PHISCALE_TRACEBACK=1 shows the traceback; other errors pass."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from phiscale.errors import PhiscaleError, user_errors_as_one_line


@user_errors_as_one_line
def tool(value: int) -> int:
    """A console script's main."""
    if value < 0:
        raise PhiscaleError(f"value={value} must be >= 0; pass e.g. value=1")
    if value == 0:
        raise RuntimeError("a bug, not a user error")
    return value * 2


def test_a_user_error_is_one_line_and_exit_status_2(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/phiscale-tool", "-1"])
    monkeypatch.delenv("PHISCALE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        tool(-1)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "phiscale-tool: error: value=-1 must be >= 0; pass e.g. value=1\n"


def test_results_and_other_errors_pass_through():
    assert tool(3) == 6
    with pytest.raises(RuntimeError, match="a bug"):
        tool(0)
    assert tool.__name__ == "tool" and tool.__doc__ == "A console script's main."


def test_phiscale_traceback_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("PHISCALE_TRACEBACK", "1")
    with pytest.raises(PhiscaleError, match="value=-1"):
        tool(-1)


def test_a_console_script_prints_nothing_else():
    code = ("from phiscale.errors import PhiscaleError, user_errors_as_one_line\n"
            "@user_errors_as_one_line\n"
            "def main():\n"
            "    raise PhiscaleError('data.batch_size=0 must be >= 1 (per device), e.g. 64')\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "PHISCALE_TRACEBACK"})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "-c: error: data.batch_size=0 must be >= 1 (per device), e.g. 64\n"


def test_a_full_disk_is_found_however_it_is_wrapped_and_said_in_one_line(tmp_path):
    from support.small_fs import fill, tmpfs

    from phiscale.errors import DiskFull, disk_full_cause, disk_full_errno, size_text

    with tmpfs(tmp_path / "small", "64k") as disk:
        fill(disk)
        try:
            try:
                (disk / "more").write_bytes(b"x" * 10_000)
            except OSError:  # what torch's zip writer does: its own error, raised while handling the write's
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from None
        except RuntimeError as err:
            wrapped = err
    assert wrapped.__cause__ is None and disk_full_errno(wrapped) == errno.ENOSPC
    assert isinstance(disk_full_cause(wrapped), OSError)
    assert disk_full_errno(OSError(errno.EDQUOT, "Disk quota exceeded")) == errno.EDQUOT
    assert disk_full_errno(RuntimeError("a bug")) is None and disk_full_errno(OSError(errno.EACCES, "no")) is None

    full = DiskFull("writing best.ckpt", "/scratch/run/checkpoints", 12_466_229, 6_492_160, code=errno.EDQUOT,
                    notes=["last.ckpt is kept"])
    said = str(full.with_fix(["step 22"], "free space, then run the same command again"))
    assert said == ("the disk quota is exceeded: writing best.ckpt in /scratch/run/checkpoints needed 11.9 MiB and "
                    "6.2 MiB is free; last.ckpt is kept; step 22; free space, then run the same command again")
    assert [size_text(n) for n in (0, 1023, 1024, 3 * 2**30)] == ["0 B", "1023 B", "1.0 KiB", "3.0 GiB"]
