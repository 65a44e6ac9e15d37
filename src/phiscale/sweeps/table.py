"""Plain-text tables for the terminal: what `phiscale-sweep list` and `status` print."""

from __future__ import annotations

from collections.abc import Sequence


def columns(header: list[str], rows: list[list[str]], left: Sequence[int] = ()) -> list[str]:
    """A plain-text table: columns in `left` left-aligned, the others right-aligned."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

    def fmt(row: list[str]) -> str:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "  ".join(cells).rstrip()

    return [fmt(header), *map(fmt, rows)]


def num(value: float | None, spec: str = "{:.3f}") -> str:
    """A number as a cell: '-' for a value not there."""
    return "-" if value is None else spec.format(value)
