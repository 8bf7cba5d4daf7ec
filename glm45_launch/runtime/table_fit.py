"""Tables that fit the width they are printed at (80 columns, a pipe, a log): never a cut cell.

:class:`FitTable` renders a rich ``Table`` as it is when every column fits unwrapped;
otherwise one wrapped line per row (``first cell  header: value; header: value``) or the
caller's own narrow layout. Long words fold onto the next line instead of ending in an
ellipsis, so every fact stays readable (and greppable) at any width.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

WIDE = 100_000  # a width no table reaches: measure a table unclamped


def wrapped(text: Any, style: str = "") -> Any:
    """``text`` (markup or a rich Text) as a Text that wraps, folding long words, even where the
    console does not wrap (the reporter prints with soft_wrap)."""
    from rich.text import Text

    out = text.copy() if isinstance(text, Text) else Text.from_markup(str(text), style=style)
    out.no_wrap, out.overflow = False, "fold"
    return out


class Hanging:
    """A Text wrapped at the width, its continuation lines indented (``indent`` spaces)."""

    def __init__(self, text: Any, indent: int = 2) -> None:
        self.text, self.indent = wrapped(text), indent

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.segment import Segment

        width = max(options.max_width - self.indent, 10)
        for i, line in enumerate(self.text.wrap(console, width, overflow="fold")):
            line.rstrip()
            if i:
                yield Segment(" " * self.indent)
            yield from line.render(console)
            yield Segment.line()


def natural_width(console: Any, options: Any, renderable: Any) -> int:
    """The width ``renderable`` takes without wrapping anything."""
    from rich.measure import Measurement

    return Measurement.get(console, options.update(width=WIDE), renderable).maximum


def cell_text(cell: Any) -> Any:
    from rich.text import Text

    return cell.copy() if isinstance(cell, Text) else Text.from_markup(str(cell))


def row_lines(table: Any, skip: tuple[str, ...] = ("", "-")) -> list[Any]:
    """A table's rows, one wrapped line each (continuations indented): the first cell, then
    ``header: value`` for the others (cells in ``skip`` left out)."""
    from rich.text import Text

    columns = list(table.columns)
    cells = [list(c.cells) for c in columns]
    out = []
    for i in range(table.row_count):
        line = Text.assemble(cell_text(cells[0][i]).copy(), style="bold") if columns else Text()
        parts = []
        for col, col_cells in zip(columns[1:], cells[1:], strict=True):
            value = cell_text(col_cells[i])
            if value.plain.strip() in skip:
                continue
            parts.append(Text.assemble(f"{col.header}: ", value))
        if parts:
            line.append("  ")
            line.append(Text("; ").join(parts))
        out.append(Hanging(line))
    return out


class FitTable:
    """``table`` when it fits the width unwrapped, else its title and ``narrow`` (default: one
    wrapped line per row, :func:`row_lines`)."""

    def __init__(self, table: Any, narrow: list[Any] | None = None) -> None:
        self.table = table
        self.narrow = narrow

    def fits(self, console: Any, options: Any) -> bool:
        return natural_width(console, options, self.table) <= options.max_width

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        if self.fits(console, options):
            yield self.table
            return
        from rich.console import Group

        title = [wrapped(self.table.title, style="italic")] if self.table.title else []
        yield Trimmed(Group(*title, *(row_lines(self.table) if self.narrow is None else self.narrow)))


class Trimmed:
    """``renderable`` without the spaces a grid pads its lines with (a pipe, a log: no trailing blanks)."""

    def __init__(self, renderable: Any) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        from rich.segment import Segment

        for line in console.render_lines(self.renderable, options, pad=False):
            while line and not line[-1].control and not line[-1].text.strip():
                line.pop()
            if line and not line[-1].control:
                line[-1] = Segment(line[-1].text.rstrip(), line[-1].style)
            yield from line
            yield Segment.line()
