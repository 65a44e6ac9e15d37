"""Model tests run torch on one thread: the models here are tiny at test resolutions."""

from __future__ import annotations

from support.threads import one_torch_thread  # noqa: F401  (an autouse fixture for this folder)
