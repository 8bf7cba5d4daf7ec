"""``glm45-launch status``: per host, reachable / Ray running / alive in the cluster / GPUs."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.options import HOSTS, PARALLEL, SSH, hostfile_from, options, ssh_from_options, take


@click.command()
@options(HOSTS, SSH)
@click.option("--dashboard-port", type=click.IntRange(1, 65535), default=8265, show_default=True,
              help="Job server port on the head (status runs on the head, like up).")
@click.option("--dashboard-address", default=None, metavar="URL",
              help="Job server URL instead of http://127.0.0.1:PORT (after `up --dashboard-host ADDR`, "
                   "or from another machine).")
@options(PARALLEL)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def status(**kwargs: Any) -> int:
    """Show every host's state and the cluster's jobs. Exit 0 when every host is in the cluster."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from glm45_launch.runtime.usecases import Runtime
    from glm45_launch.runtime.usecases import status as run_status

    hosts = take(kwargs, HOSTS)
    hostfile = hostfile_from(hosts["hosts"])
    rt = Runtime.real(ssh_from_options(kwargs, hosts["spec"]["ssh_user"]))
    address = kwargs["dashboard_address"] or f"http://127.0.0.1:{kwargs['dashboard_port']}"
    report = run_status(hostfile, address, rt, kwargs["parallel"])
    if kwargs["as_json"]:
        click.echo(json.dumps(report.to_json(), indent=2))
        return 0 if report.healthy else 1
    table = Table(title=escape(f"hosts of {hostfile.path}"), title_justify="left")
    for col in ("host", "reachable", "ray running", "in cluster", "GPUs"):
        table.add_column(col)

    def mark(ok: bool) -> str:
        return "[green]yes[/]" if ok else "[red]no[/]"

    for row in report.hosts:
        table.add_row(escape(row.host), mark(row.reachable) + (f" ({escape(row.error)})" if row.error else ""),
                      mark(row.ray_running), mark(row.alive_in_cluster), f"{row.gpus:.0f}")
    rt.reporter.show(table)
    if report.cluster_error:
        rt.reporter.warn(f"cluster at {address}: not reachable ({report.cluster_error})")
    else:
        rt.reporter.phase(f"cluster at {address}: {report.alive_nodes} alive node(s), {report.alive_gpus:.0f} GPUs")
        jobs = Table(title="jobs", title_justify="left")
        for col in ("submission id", "status", "entrypoint"):
            jobs.add_column(col)
        for j in report.jobs:
            jobs.add_row(escape(j["id"]), escape(j["status"]), escape(j["entrypoint"][:80]))
        rt.reporter.show(jobs)
    return 0 if report.healthy else 1
