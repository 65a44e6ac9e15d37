"""The cache dir ($PHISCALE_CACHE, else ~/.cache/phiscale, joined with its parts, created on demand),
and atomic record writes."""

from __future__ import annotations

from phiscale.paths import cache_dir


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
    import os
    import stat

    from phiscale.paths import write_atomically

    target = tmp_path / "record.json"
    target.write_text("old")
    write_atomically(target, '{"new": 1}', mode=0o600)
    assert target.read_text() == '{"new": 1}'
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"], "the temporary file is gone"


def _umask() -> int:
    import os

    current = os.umask(0)
    os.umask(current)
    return current
