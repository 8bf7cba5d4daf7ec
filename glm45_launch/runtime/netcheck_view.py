"""The network check's report on the terminal: its table (core/netcheck_judge.py) and the pair
matrix as coloured cells (green: a pair as fast as the rest, red: slow or failed, grey: not tried)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from glm45_launch.core.netcheck_judge import pair_matrix, render_table
from glm45_launch.runtime.interfaces import Reporter

MAX_MATRIX = 64  # nodes: a bigger matrix does not fit 80 columns (the PNG in the run dir shows it)


def matrix_text(report: Mapping[str, Any]) -> Any:
    """The pair matrix as a rich Text: row ``i`` is host ``i`` of the legend; None without pairs."""
    from rich.text import Text

    hosts, grid = pair_matrix(report)
    if not report.get("pairs") or len(hosts) > MAX_MATRIX:
        return None
    bad = {frozenset(p["hosts"]) for p in report["pairs"] if not p.get("ok")}
    text = Text("pairs (row/column = node number; green ok, red slow or failed, grey not tried)\n")
    for i, row in enumerate(grid):
        text.append(f"{i + 1:>3} ")
        for j, value in enumerate(row):
            if value is None:
                text.append("··" if i != j else "  ", style="dim")
            else:
                text.append("██", style="red" if frozenset((hosts[i], hosts[j])) in bad else "green")
        text.append(f"  {hosts[i]}\n")
    return text


def show_report(reporter: Reporter, report: Mapping[str, Any]) -> None:
    """The table, then the matrix (when pairs were tried)."""
    from rich.text import Text

    reporter.show(Text("\n".join(render_table(report))))
    matrix = matrix_text(report)
    if matrix is not None:
        reporter.show(matrix)
