"""The cache dir: $PHISCALE_CACHE, else ~/.cache/phiscale, joined with its parts and created on demand."""

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
