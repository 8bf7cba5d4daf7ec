"""The real :class:`~.interfaces.Reporter`: rich output on stderr, thread-safe lines, and one
live progress line for a fan-out over many hosts."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from glm45_launch.runtime.interfaces import Echo, Row
from glm45_launch.runtime.table_fit import FitTable

LIVE_LINE_CHARS = 100  # the latest output line, as the live board shows it
TABLE_ROWS = 32  # a longer outcome table shows only its failures and one row for the rest


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
        return _SourceEcho(self, source)

    def _board(self, total: int) -> FanOutBoard | None:
        """A live board, or None while another live display (a progress bar) is on."""
        from rich.errors import LiveError

        try:
            return FanOutBoard(self, total)
        except LiveError:
            return None

    def table(self, title: str, rows: Sequence[Row]) -> None:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(title), title_justify="left")
        for col in ("host", "what", "exit", "time", "result"):
            table.add_column(col, justify="right" if col in ("exit", "time") else "left")
        shown = list(rows)
        if len(shown) > TABLE_ROWS:  # a rack row: the failures, and how many went well
            shown = [o for o in rows if not o.ok]
        for o in shown:
            # Errors quote paths and output: escaped, "[/root/x]" is text, not rich markup.
            table.add_row(
                escape(o.host), escape(o.what), "-" if o.exit_code is None else str(o.exit_code),
                f"{o.duration_s:.1f}s", "[green]ok[/]" if o.ok else f"[red]{escape(o.error or 'failed')}[/]",
            )
        if len(shown) < len(rows):
            slowest = max((o.duration_s for o in rows if o.ok), default=0.0)
            table.add_row("...", f"{len(rows) - len(shown)} more", "0", f"<={slowest:.1f}s", "[green]ok[/]")
        with self._lock:
            self.rich.print(FitTable(table))  # one line per row when the columns do not fit

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


class _SourceEcho:
    """``echo_for(source)``: prints a source's lines; a fan-out over many hosts asks it for a
    live board instead (``fanout.LIVE_AFTER``)."""

    __slots__ = ("reporter", "source")

    def __init__(self, reporter: RichReporter, source: str) -> None:
        self.reporter, self.source = reporter, source

    def __call__(self, text: str) -> None:
        self.reporter.line(self.source, text)

    def fan_out_board(self, total: int) -> FanOutBoard | None:
        return self.reporter._board(total)


class FanOutBoard:
    """One live line for a fan-out: ``hosts ━━━━━ 120/200 · 2 failed · [host] latest line``.

    Thread-safe: hosts report lines and completions from their threads; rich redraws the line
    a few times a second (on a terminal; elsewhere only the final line is printed). Failures
    are named by the caller afterwards, with their output tails; every line is in the logs.
    """

    def __init__(self, reporter: RichReporter, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.total, self.failed, self.lines = total, 0, 0
        self._lock = threading.Lock()
        self._progress = Progress(
            TextColumn("[bold]hosts"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[failed]}"), TimeElapsedColumn(), TextColumn("{task.fields[latest]}"),
            console=reporter.rich, transient=False, disable=reporter.quiet, refresh_per_second=4,
        )
        self._task = self._progress.add_task("hosts", total=total, failed="", latest="")
        self._progress.start()

    def line(self, host: str, text: str) -> None:
        from rich.markup import escape

        shown = f"[cyan]\\[{escape(host)}][/] {escape(text[:LIVE_LINE_CHARS])}"
        with self._lock:
            self.lines += 1
        self._progress.update(self._task, latest=shown)

    def done(self, host: str, ok: bool) -> None:
        with self._lock:
            self.failed += not ok
            failed = f"[red]{self.failed} failed[/]" if self.failed else ""
        self._progress.update(self._task, advance=1, failed=failed)

    def close(self) -> None:
        self._progress.update(self._task, latest=f"{self.lines} output line(s) in the host logs")
        self._progress.stop()
