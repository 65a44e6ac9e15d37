"""Where phiscale keeps caches (generated datasets, numba's JIT cache, compiled DeepSpeed ops), and
how it rewrites its small records (run, sweep and server state) so that no reader sees half a file."""

from __future__ import annotations

import os
from pathlib import Path

from phiscale.errors import DiskFull, disk_full_errno


def cache_dir(*parts: str) -> Path:
    """`$PHISCALE_CACHE` (default `~/.cache/phiscale`), joined with `parts`, created on demand."""
    root = Path(os.environ.get("PHISCALE_CACHE", Path.home() / ".cache" / "phiscale")).expanduser()
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_bytes(path: str | os.PathLike[str]) -> int:
    """The bytes an unprivileged writer may still use on `path`'s file system (its nearest existing
    folder's; statvfs f_bavail: a quota is not seen here)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def write_atomically(path: Path, text: str, mode: int = 0o666) -> None:
    """Replace `path` with `text` in one step: a temporary file beside it (created with `mode`, less
    the umask), then os.replace; a reader sees the old content or the new, never part of it. A write
    that fails removes its temporary; on a full disk that is one line (DiskFull), the old file kept."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = text.encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if (code := disk_full_errno(err)) is None:
            raise
        kept = f"the previous {path.name} is kept" if path.exists() else f"no {path.name} was written"
        raise DiskFull(f"writing {path.name}", path.parent, len(data), free_bytes(path.parent), code=code,
                       notes=(kept,)) from None
