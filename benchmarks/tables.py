"""Plain-text tables for the bench report."""

from __future__ import annotations

from typing import Any


def row(cells: list[Any], widths: list[int]) -> str:
    return "  ".join(
        str(c).rjust(w) if i else str(c).ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def table(head: list[str], rows: list[list[Any]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    return [row(head, widths), row(["-" * w for w in widths], widths)] + [
        row(r, widths) for r in rows
    ]


def mark(ok: bool) -> str:
    return "met" if ok else "MISSED"
