"""``glm45-launch down``: stop Ray on every host of the hostfile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import ssh_from_options, ssh_options
from glm45_launch.core.hostfile import DEFAULT_HOSTFILE, load_hostfile


@click.command()
@click.option("--hostfile", default=str(DEFAULT_HOSTFILE), show_default=True)
@click.option("--include", multiple=True, metavar="HOSTS")
@click.option("--exclude", multiple=True, metavar="HOSTS")
@click.option("--head", envvar="MLP_WORKER_0_HOST", default=None,
              help="Also stop the head here when it is this machine and not in the hostfile.")
@click.option("--ssh-user", default="root", show_default=True)
@ssh_options
@click.option("--parallel", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--run-dir", type=click.Path(file_okay=False), default=None)
def down(**kwargs: Any) -> int:
    """Stop Ray (`ray stop --force`) on every host, in parallel; one table row per host."""
    from glm45_launch.core.plan import WORKER, build_down_plan
    from glm45_launch.core.quoting import remote_command
    from glm45_launch.runtime import cluster
    from glm45_launch.runtime.executor import Console, Outcome, default_run_dir, run_on_hosts
    from glm45_launch.runtime.local import LocalRunner
    from glm45_launch.runtime.ssh import SshRunner

    hostfile = load_hostfile(kwargs["hostfile"]).select(kwargs["include"], kwargs["exclude"])
    ssh = ssh_from_options(kwargs, kwargs["ssh_user"])
    head = kwargs["head"] or None
    steps = build_down_plan(hostfile, head, head_is_local=bool(head) and cluster.is_local_address(head))
    run_dir = Path(kwargs["run_dir"]).resolve() if kwargs["run_dir"] else default_run_dir()
    console = Console()
    outcomes: list[Outcome] = []

    def log_path(host: str) -> Path:
        return run_dir / "down" / f"{host.replace(':', '_')}.log"

    for step in (s for s in steps if s.where != WORKER):
        res = LocalRunner().run(step.commands[0], log_path(step.host), timeout_s=60)
        outcomes.append(Outcome.of(step.host, "ray stop --force (here)", res))
    remote = [s for s in steps if s.where == WORKER]
    results = run_on_hosts(SshRunner(ssh), [(s.host, remote_command(s.commands)) for s in remote],
                           kwargs["parallel"], log_path, console.echo_for)
    for r in results:
        outcomes.append(Outcome.of(r.host, "ray stop --force", r))
    console.table("glm45-launch down", outcomes)
    failed = [o.host for o in outcomes if not o.ok]
    if failed:
        console.say(f"could not stop Ray on: {', '.join(failed)}", "bold red")
        return 1
    return 0
