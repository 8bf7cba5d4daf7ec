"""``glm45-launch status``: per host, reachable / Ray running / alive in the cluster / GPUs."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import ssh_from_options, ssh_options
from glm45_launch.core.hostfile import DEFAULT_HOSTFILE, load_hostfile


@click.command()
@click.option("--hostfile", default=str(DEFAULT_HOSTFILE), show_default=True)
@click.option("--include", multiple=True, metavar="HOSTS")
@click.option("--exclude", multiple=True, metavar="HOSTS")
@click.option("--ssh-user", default="root", show_default=True)
@ssh_options
@click.option("--dashboard-port", type=click.IntRange(1, 65535), default=8265, show_default=True,
              help="Job server port on the head (status runs on the head, like up).")
@click.option("--dashboard-address", default=None, metavar="URL",
              help="Job server URL instead of http://127.0.0.1:PORT (after `up --dashboard-host ADDR`, "
                   "or from another machine).")
@click.option("--parallel", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def status(**kwargs: Any) -> int:
    """Show every host's state and the cluster's jobs. Exit 0 when every host is in the cluster."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from glm45_launch.core.quoting import remote_command
    from glm45_launch.runtime import cluster
    from glm45_launch.runtime.executor import Console, run_on_hosts
    from glm45_launch.runtime.ssh import SshRunner

    hostfile = load_hostfile(kwargs["hostfile"]).select(kwargs["include"], kwargs["exclude"])
    ssh = ssh_from_options(kwargs, kwargs["ssh_user"])
    dashboard = kwargs["dashboard_address"] or cluster.dashboard_url(kwargs["dashboard_port"])
    # pgrep exits 0 when a raylet runs, 1 when none does: no shell logic on the remote side.
    probe = remote_command([("pgrep", "-x", "raylet")])
    with tempfile.TemporaryDirectory(prefix="glm45-status-") as tmp:
        logs = Path(tmp)
        results = run_on_hosts(SshRunner(ssh), [(h, probe) for h in hostfile.names], kwargs["parallel"],
                               lambda h: logs / f"{h.replace(':', '_')}.log")
    try:
        nodes = cluster.alive_nodes(dashboard)
        cluster_error = None
    except Exception as exc:  # noqa: BLE001 - no cluster is a state to report, not a crash
        nodes, cluster_error = [], f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    rows = []
    for r in results:
        addrs = cluster.resolve(r.host)
        node = next((n for n in nodes if n.ip in addrs and n.alive), None)
        rows.append({
            "host": r.host,
            "reachable": r.error is None or r.exit_code is not None,
            "ray_running": r.exit_code == 0,
            "alive_in_cluster": node is not None,
            "gpus": node.gpus if node else 0,
            "error": r.error if r.exit_code is None else None,
        })
    jobs = []
    if cluster_error is None:
        try:
            jobs = [{"id": j, "status": s, "entrypoint": e} for j, s, e in cluster.list_jobs(dashboard)]
        except Exception as exc:  # noqa: BLE001
            cluster_error = f"jobs: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    healthy = all(r["reachable"] and r["ray_running"] and r["alive_in_cluster"] for r in rows)
    if kwargs["as_json"]:
        click.echo(json.dumps({"hosts": rows, "jobs": jobs, "cluster_error": cluster_error,
                               "alive_nodes": sum(n.alive for n in nodes)}, indent=2))
        return 0 if healthy else 1
    console = Console()
    table = Table(title=escape(f"hosts of {hostfile.path}"), title_justify="left")
    for col in ("host", "reachable", "ray running", "in cluster", "GPUs"):
        table.add_column(col)

    def mark(ok: bool) -> str:
        return "[green]yes[/]" if ok else "[red]no[/]"

    for row in rows:
        table.add_row(escape(row["host"]), mark(row["reachable"]) + (f" ({escape(row['error'])})" if row["error"] else ""),
                      mark(row["ray_running"]), mark(row["alive_in_cluster"]), f"{row['gpus']:.0f}")
    console.rich.print(table)
    if cluster_error:
        console.say(f"cluster at {dashboard}: not reachable ({cluster_error})", "yellow")
    else:
        console.say(f"cluster at {dashboard}: {sum(n.alive for n in nodes)} alive node(s), "
                    f"{sum(n.gpus for n in nodes if n.alive):.0f} GPUs")
        jt = Table(title="jobs", title_justify="left")
        for col in ("submission id", "status", "entrypoint"):
            jt.add_column(col)
        for j in jobs:
            jt.add_row(escape(j["id"]), escape(j["status"]), escape(j["entrypoint"][:80]))
        console.rich.print(jt)
    return 0 if healthy else 1
