"""A real full disk for tests: a small tmpfs mounted under the test's tmp dir (CI runs as root), grown
again with a remount, and a filler file that takes every byte left (not a mocked OSError)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PAGE = 4096  # a tmpfs hands out whole pages; a file's last page may still have room


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (mount's size=, e.g. 16m) at `path`, unmounted when the block ends."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a real full disk) needs root; CI runs the suite as root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs at {path}: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)  # a process still holds a file there


def resize(path: Path, size: str) -> None:
    """Grow (or shrink) the tmpfs at `path`; its files stay."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def fill(directory: Path) -> Path:
    """A file in `directory` that takes every byte its file system has left; remove it to free them."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (b"\0" * 2**20, b"\0" * PAGE, b"\0"):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler
