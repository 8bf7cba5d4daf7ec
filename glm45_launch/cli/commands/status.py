"""``glm45-launch status``: per node, reachable / raylet process / Ray's node table / GPUs / health;
the cluster's jobs with their state and runtime (the current run's job marked)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import (
    HOSTS,
    PARALLEL,
    SSH,
    by_name,
    hostfile_from,
    options,
    output_format,
    ssh_from_options,
    take,
)


@click.command()
@options(HOSTS, by_name("head", help="The head (checked here when it is this machine) [env MLP_WORKER_0_HOST]."),
         SSH)
@click.option("--dashboard-port", type=click.IntRange(1, 65535), default=8265, show_default=True,
              help="Job server port on the head (status runs on the head, like up).")
@click.option("--dashboard-address", default=None, metavar="URL",
              help="Job server URL instead of http://127.0.0.1:PORT (after `up --dashboard-host ADDR`, "
                   "or from another machine).")
@options(PARALLEL)
@output_format()
@click.option("--runs", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              help="Where `up` wrote its runs: the last one's job is marked as the current job.")
def status(**kwargs: Any) -> int:
    """Show every host's state and the cluster's jobs. Exit 0 when every host is in the cluster."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from glm45_launch.runtime.jobs import current_job
    from glm45_launch.runtime.runtime import Runtime
    from glm45_launch.runtime.status import status as run_status
    from glm45_launch.runtime.table_fit import FitTable

    hosts = take(kwargs, HOSTS)
    hostfile = hostfile_from(hosts["hosts"])
    rt = Runtime.real(ssh_from_options(kwargs, hosts["spec"]["ssh_user"]), parallel=kwargs["parallel"])
    address = kwargs["dashboard_address"] or f"http://127.0.0.1:{kwargs['dashboard_port']}"
    report = run_status(hostfile, address, rt, kwargs["head"] or None)
    current = current_job(kwargs["runs"])
    if kwargs["fmt"] == "json":
        click.echo(json.dumps({**report.to_json(), "current_job": current}, indent=2))
        return 0 if report.healthy else 1
    table = Table(title=escape(f"hosts of {hostfile.path}"), title_justify="left")
    for col in ("host", "reachable", "raylet process", "Ray's node table", "GPUs", "health"):
        table.add_column(col)

    def mark(ok: bool) -> str:
        return "[green]yes[/]" if ok else "[red]no[/]"

    for row in report.hosts:
        state = {"ALIVE": "[green]ALIVE[/]", "DEAD": "[red]DEAD[/]"}.get(row.ray_state, row.ray_state)
        health = "[green]ok[/]" if row.health == "ok" else f"[red]{escape(row.health)}[/]"
        table.add_row(escape(row.host), mark(row.reachable) + (f" ({escape(row.error)})" if row.error else ""),
                      mark(row.ray_running), state, f"{row.gpus:.0f}", health)
    rt.reporter.show(FitTable(table))  # one line per host when the columns do not fit
    if report.cluster_error:
        rt.reporter.warn(f"cluster at {address}: not reachable ({report.cluster_error})")
    else:
        rt.reporter.phase(f"cluster at {address}: {report.alive_nodes} alive node(s), {report.alive_gpus:.0f} GPUs")
        jobs = Table(title="jobs" + (f" (current: {escape(current)})" if current else ""), title_justify="left")
        for col in ("submission id", "status", "runtime", "entrypoint"):
            jobs.add_column(col)
        for j in report.jobs:
            name = escape(j["id"]) + (" [bold]*[/]" if j["id"] == current else "")
            jobs.add_row(name, escape(j["status"]), _duration(j.get("runtime_s")), escape(_cut(j["entrypoint"], 80)))
        rt.reporter.show(FitTable(jobs))
    return 0 if report.healthy else 1


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _cut(text: str, limit: int) -> str:
    """``text``, or its first ``limit`` characters and `` ...`` (an entrypoint holds every train arg)."""
    return text if len(text) <= limit else text[: limit - 4] + " ..."
