"""Helpers the tests share (importable: pytest puts tests/ on sys.path, see pyproject.toml)."""
