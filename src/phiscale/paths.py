"""Where phiscale keeps caches (generated datasets, numba's JIT cache, compiled DeepSpeed ops), and
how it rewrites its small records (run, sweep and server state) so that no reader sees half a file."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """`$PHISCALE_CACHE` (default `~/.cache/phiscale`), joined with `parts`, created on demand."""
    root = Path(os.environ.get("PHISCALE_CACHE", Path.home() / ".cache" / "phiscale")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomically(path: Path, text: str, mode: int = 0o666) -> None:
    """Replace `path` with `text` in one step: a temporary file beside it (created with `mode`, less
    the umask), then os.replace; a reader sees the old content or the new, never part of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(tmp, path)
