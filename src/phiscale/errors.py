"""User-facing errors: one line that names the bad value and the fix, never a deep traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class PhiscaleError(ValueError):
    """A bad input or environment the user can fix; its message is the whole story."""


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
