"""The one Markdown table writer of the lab and the benchmarks: every results page uses it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_RULES = {"l": "---", "r": "---:"}


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    align: Sequence[str] | None = None,
) -> str:
    """A GitHub Markdown table: ``| a | b |`` lines, cells as ``str(cell)``, no trailing newline.

    ``align`` gives one item per column, ``"l"`` (left) or ``"r"`` (right); without it every
    column is left-aligned. The rule line is written ``|---|---:|`` and an empty cell ``| |``,
    as every committed page has them. A row of the wrong width is an error.
    """
    align = list(align) if align is not None else ["l"] * len(header)
    if len(align) != len(header) or any(a not in _RULES for a in align):
        raise ValueError(f"align needs one of 'l'/'r' per column, got {align!r}")
    lines = [_line(header), "|" + "".join(_RULES[a] + "|" for a in align)]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise ValueError(f"row {cells!r} has {len(cells)} cells for {len(header)} columns")
        lines.append(_line(cells))
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"
