"""Running preflight: the probe steps on every host at once, judged by ``checks.preflight``."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from glm45_launch.checks.host_checks import lib_checks
from glm45_launch.checks.preflight import judge, preflight_steps
from glm45_launch.checks.preflight_report import (
    FAIL,
    GROUPS,
    OK,
    WARN,
    Check,
    PreflightOptions,
    PreflightReport,
)
from glm45_launch.core.plan import Plan
from glm45_launch.runtime.reporter import TABLE_ROWS
from glm45_launch.runtime.runtime import Runtime


def _run_libs(plan: Plan) -> Check:
    """validate_libs' megatron-core/sglang checks with the head's installed versions."""
    try:
        from glm45_launch.checks.libs import check_libraries

        report = check_libraries(plan)
    except Exception as exc:  # noqa: BLE001 - a broken library check is a warning, not a crash
        return Check("libs", WARN, f"megatron-core/sglang checks crashed: {type(exc).__name__}: {exc}")
    return lib_checks([p.message for p in report.problems], report.notes)


def run_preflight(plan: Plan, opts: PreflightOptions, log_dir: Path, rt: Runtime) -> PreflightReport:
    """Probe every host at once (:func:`checks.preflight.preflight_steps`: the head here when it
    is this machine or not in the hostfile, the others over SSH) and judge the facts."""
    start = time.monotonic()
    steps = preflight_steps(plan, opts, rt.here(plan.head))
    runner = rt.steps(log_dir, plan.head, parallel=opts.parallel, head_here=True)  # the plan decided where
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight-libs") as pool:
        libs = pool.submit(_run_libs, plan) if opts.libs else None
        results = runner.run(steps, timeout_s=opts.timeout_s)
        lib_check = libs.result() if libs is not None else None
    return judge(plan, opts, steps, results, lib_check, plan.cluster.ssh_user, time.monotonic() - start)


_STYLE = {OK: "[green]ok[/]", WARN: "[yellow]warn[/]", FAIL: "[bold red]FAIL[/]"}


def report_table(report: PreflightReport) -> Any:
    """One row per host, a column per check group; then every warning and failure. Past
    :data:`TABLE_ROWS` hosts (a rack row), hosts without a failure share a row with those of the
    same role and statuses, and a problem seen on several hosts is one line that counts them.
    Where the table does not fit the width (80 columns, a pipe): one line per host (or row) naming
    its failing and warning groups instead, then the same problem lines; nothing is cut."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from glm45_launch.runtime.table_fit import FitTable, Hanging, Trimmed, wrapped

    statuses = [h.group_statuses() for h in report.hosts]
    groups = [g for g in GROUPS if any(g in st for st in statuses)]
    table = Table(title=f"glm45-launch preflight ({report.duration_s:.1f}s)", title_justify="left")
    for col in ("host", "role", *groups):
        table.add_column(col)
    wide = len(report.hosts) > TABLE_ROWS
    rows: list[tuple[str, str, dict[str, str]]] = []  # (name, role, statuses) per table row
    alike: dict[tuple[str, ...], list[str]] = {}  # wide: hosts with no failure, by role and statuses
    for h, st in zip(report.hosts, statuses, strict=True):
        cells = tuple(st.get(g, "") for g in groups)
        if wide and FAIL not in cells:
            alike.setdefault((h.role, *cells), []).append(h.host)
        else:
            rows.append((h.host, f"{h.role}, {h.via}", st))
            table.add_row(escape(h.host), h.role, *(_STYLE[c] if c else "-" for c in cells))
    for (role, *cells), hosts in alike.items():
        name = hosts[0] if len(hosts) == 1 else f"{len(hosts)} hosts ({hosts[0]}...)"
        rows.append((name, role, dict(zip(groups, cells, strict=True))))
        table.add_row(escape(name), role, *(_STYLE[c] if c else "-" for c in cells))
    fails, warns = report.problems(FAIL), report.problems(WARN)
    lines: list[Any] = [FitTable(table, [Hanging(_host_line(*row)) for row in rows])]
    problems = Table.grid(padding=(0, 1, 0, 0))
    problems.add_column(no_wrap=True)
    problems.add_column(overflow="fold")
    for status, found in ((FAIL, fails), (WARN, warns)):
        for text in _problem_lines(found, wide):
            problems.add_row(Text.from_markup(f" {_STYLE[status]}"), Text(text, overflow="fold"))
    if problems.row_count:
        lines.append(Trimmed(problems))
    verdict = "[green]preflight passed[/]" if report.ok else "[bold red]preflight failed[/]"
    lines.append(wrapped(f"{verdict}: {len(report.hosts)} host(s), {len(fails)} "
                         f"failure(s), {len(warns)} warning(s)"))
    return Group(*lines)


def _host_line(name: str, role: str, statuses: dict[str, str]) -> Any:
    """A host's row as one line: ``HOST (ROLE): FAIL a, b · warn c · N ok``."""
    from rich.markup import escape

    by = {s: [g for g in GROUPS if statuses.get(g) == s] for s in (FAIL, WARN, OK)}
    parts = [f"{_STYLE[s]} {', '.join(by[s])}" for s in (FAIL, WARN) if by[s]]
    parts.append(f"{len(by[OK])} ok" if by[FAIL] or by[WARN] else f"{_STYLE[OK]}: {', '.join(by[OK])}")
    return f"[bold]{escape(name)}[/] ({escape(role)}): " + " · ".join(parts)


def _problem_lines(found: list[tuple[str, Check]], grouped: bool) -> list[str]:
    """``HOST CHECK: DETAIL`` each; ``grouped``: one line per (check, detail) naming a few hosts."""
    if not grouped:
        return [f"{host} {check.name}: {check.detail}" for host, check in found]
    hosts: dict[tuple[str, str], list[str]] = {}
    for host, check in found:
        hosts.setdefault((check.name, check.detail), []).append(host)
    return [f"{', '.join(names[:3])}{f' and {len(names) - 3} more host(s)' if len(names) > 3 else ''} "
            f"{name}: {detail}" for (name, detail), names in hosts.items()]
