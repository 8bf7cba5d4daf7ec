"""The real :class:`~.interfaces.Reporter`: rich output on stderr, thread-safe lines."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from glm45_launch.runtime.interfaces import Echo, Row


class RichReporter:
    """Host-prefixed lines, phase messages, tables and a progress bar on stderr (rich)."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.rich = Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._lock = threading.Lock()

    def _say(self, text: str, style: str) -> None:
        from rich.text import Text

        with self._lock:
            self.rich.print(Text(text, style=style))

    def phase(self, text: str) -> None:
        self._say(text, "bold")

    def ok(self, text: str) -> None:
        self._say(text, "bold green")

    def warn(self, text: str) -> None:
        self._say(text, "bold yellow")

    def error(self, text: str) -> None:
        self._say(text, "bold red")

    def line(self, source: str, text: str) -> None:
        """One line of a host's or command's output (silent when quiet)."""
        if self.quiet:
            return
        from rich.text import Text

        with self._lock:
            self.rich.print(Text.assemble((f"[{source}] ", "cyan"), text))

    def echo_for(self, source: str) -> Echo:
        return lambda text: self.line(source, text)

    def table(self, title: str, rows: Sequence[Row]) -> None:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(title), title_justify="left")
        for col in ("host", "what", "exit", "time", "result"):
            table.add_column(col, justify="right" if col in ("exit", "time") else "left")
        for o in rows:
            # Errors quote paths and output: escaped, "[/root/x]" is text, not rich markup.
            table.add_row(
                escape(o.host), escape(o.what), "-" if o.exit_code is None else str(o.exit_code),
                f"{o.duration_s:.1f}s", "[green]ok[/]" if o.ok else f"[red]{escape(o.error or 'failed')}[/]",
            )
        with self._lock:
            self.rich.print(table)

    def show(self, renderable: Any) -> None:
        """Any rich renderable (a command's own table)."""
        with self._lock:
            self.rich.print(renderable)

    @contextmanager
    def progress(self, what: str, total: int) -> Iterator[Any]:
        """A progress bar: ``update(done, detail)`` on what it yields."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn(f"[bold]{what}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=self.rich,
                      transient=self.quiet, disable=self.quiet) as bar:
            task = bar.add_task(what, total=total, detail="")
            yield _Bar(lambda done, detail: bar.update(task, completed=done, detail=detail))


class _Bar:
    def __init__(self, update: Any) -> None:
        self.update = update
