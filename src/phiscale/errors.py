"""User-facing errors: one line that names the bad value and the fix, never a deep traceback."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class PhiscaleError(ValueError):
    """A bad input or environment the user can fix; its message is the whole story."""


# The errnos of a write that did not fit, and how the one line names them (write(2): ENOSPC, EDQUOT).
DISK_FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}


def disk_full_cause(err: BaseException | None) -> OSError | None:
    """The ENOSPC or EDQUOT OSError that `err` is, or was raised from or while handling: torch's zip
    writer reports a full disk as a RuntimeError ("unexpected pos ...") raised while handling the
    OSError of the write that failed."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return err
        err = err.__cause__ or err.__context__
    return None


def disk_full_errno(err: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT when a full disk is why `err` happened (`disk_full_cause`), else None."""
    cause = disk_full_cause(err)
    return None if cause is None else cause.errno


def size_text(num_bytes: int) -> str:
    """`11.9 MiB`, `312 B`: the units of `df -h`."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class DiskFull(PhiscaleError):
    """A write that did not fit, as one line: what failed where, the bytes it needed and the bytes
    free, what is kept (`notes`), and the fix; the caller that knows more (a run: its checkpoint,
    that the same command resumes) makes a fuller one with `with_fix`."""

    def __init__(self, what: str, directory: str | os.PathLike[str], needed: int | None, free: int, *,
                 code: int = errno.ENOSPC, notes: Sequence[str] = (),
                 fix: str = "free space there (or write elsewhere) and run the command again") -> None:
        self.what, self.directory, self.needed, self.free = what, str(directory), needed, int(free)
        self.code, self.notes, self.fix = code, tuple(notes), fix
        figures = (f"needed {size_text(needed)} and {size_text(free)} is free" if needed is not None
                   else f"did not fit ({size_text(free)} free)")
        super().__init__("; ".join((f"{DISK_FULL[code]}: {what} in {self.directory} {figures}", *self.notes, fix)))

    def with_fix(self, notes: Sequence[str], fix: str) -> DiskFull:
        return DiskFull(self.what, self.directory, self.needed, self.free, code=self.code,
                        notes=(*self.notes, *notes), fix=fix)


def user_errors_as_one_line(main: F) -> F:
    """Wrap a console-script entry point: PhiscaleError prints `prog: error: …` and exits 2.

    Set PHISCALE_TRACEBACK=1 to see the traceback as well.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PhiscaleError as err:
            if os.environ.get("PHISCALE_TRACEBACK"):
                raise
            prog = os.path.basename(sys.argv[0]) or "phiscale"
            print(f"{prog}: error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
