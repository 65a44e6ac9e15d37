"""The cache dir ($PHISCALE_CACHE, else ~/.cache/phiscale, joined with its parts, created on demand),
atomic record writes, and a record that does not fit on a real full disk (a small tmpfs)."""

from __future__ import annotations

import json
import os

import pytest
from support.small_fs import fill, tmpfs

from phiscale.errors import DiskFull
from phiscale.paths import cache_dir, free_bytes, write_atomically


def test_phiscale_cache_wins_and_the_folder_is_created(tmp_path, monkeypatch):
    monkeypatch.setenv("PHISCALE_CACHE", str(tmp_path / "cache"))
    path = cache_dir("data", "digits")
    assert path == tmp_path / "cache" / "data" / "digits" and path.is_dir()
    assert cache_dir() == tmp_path / "cache"


def test_the_default_is_under_the_home_cache_and_tilde_expands(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PHISCALE_CACHE")
    assert cache_dir("numba") == tmp_path / ".cache" / "phiscale" / "numba"
    monkeypatch.setenv("PHISCALE_CACHE", "~/elsewhere")
    assert cache_dir() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()


def test_write_atomically_replaces_the_file_with_its_mode_and_leaves_no_temporary(tmp_path):
    import stat

    target = tmp_path / "record.json"
    target.write_text("old")
    write_atomically(target, '{"new": 1}', mode=0o600)
    assert target.read_text() == '{"new": 1}'
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"], "the temporary file is gone"


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_a_record_that_does_not_fit_is_one_line_and_the_old_record_stays(tmp_path):
    with tmpfs(tmp_path / "small", "1m") as disk:
        record = disk / "run.json"
        write_atomically(record, json.dumps({"restarts": 0}))
        free = free_bytes(disk)
        assert free == os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize and free > 900_000
        filler = fill(disk)
        assert free_bytes(disk) == 0 and free_bytes(disk / "not" / "made" / "yet") == 0
        big = json.dumps({"restarts": 1, "pad": "x" * 20_000})
        with pytest.raises(DiskFull) as err:
            write_atomically(record, big)
        assert str(err.value) == (f"the disk is full: writing run.json in {disk} needed 19.6 KiB and 0 B is free; "
                                  "the previous run.json is kept; free space there (or write elsewhere) and run the "
                                  "command again")
        assert json.loads(record.read_text()) == {"restarts": 0}
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "run.json"], "the temporary is removed"
        filler.unlink()
        write_atomically(record, big)
        assert json.loads(record.read_text())["restarts"] == 1
