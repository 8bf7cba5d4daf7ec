"""``glm45-launch demo``: a real launch on a rack-in-a-box built on this machine.

No GPUs, no rack: N hosts in network/PID/mount namespaces, each with its own sshd, Ray
started over real SSH by ``glm45-launch up`` running on the head, and the smoke entry
(a real Ray driver) standing in for train.py with the recipe's exact arguments.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click

from glm45_launch.errors import LaunchError


@click.command()
@click.option("--hosts", "n_hosts", type=click.IntRange(1, 16), default=8, show_default=True,
              help="Hosts in the box (8 x 8 GPUs is the recipe's rack).")
@click.option("--keep-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the run directory and report here (default: a temp dir, removed).")
@click.argument("up_args", nargs=-1, type=click.UNPROCESSED)
def demo(n_hosts: int, keep_dir: str | None, up_args: tuple[str, ...]) -> int:
    """Build an N-host rack-in-a-box here (root) and run `glm45-launch up` on it for real.

    Extra arguments after `--` go to `up` (e.g. `-- --model glm4.5-106B-A12B`).
    """
    from glm45_launch.testing import smoke_entry
    from glm45_launch.testing.rackbox import RackBox, make_base_dir, requirements_missing

    missing = requirements_missing()
    if missing:
        raise LaunchError("demo needs a rack-in-a-box, which needs: " + "; ".join(missing))
    workdir = Path(keep_dir).resolve() if keep_dir else None
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with RackBox(n_hosts, workdir=workdir, prefix=_free_prefix()) as box:
        checkout = box.workdir / "checkout"
        checkout.mkdir(exist_ok=True)
        # The framework checkout: its train.py is the smoke entry.
        shutil.copy(smoke_entry.__file__, checkout / "train.py")
        # The files the default plan's train args point at, so preflight finds a complete rack.
        base = make_base_dir(box.workdir / "base")
        hostfile = box.hostfile(box.workdir / "mpi_rack_hostfile")
        # The recipe's layout (TP8 x PP4 x CP2) needs 64 GPUs: a smaller box runs it anyway.
        extra = [] if n_hosts == 8 else ["--actor-num-nodes", str(n_hosts), "--force"]
        argv = [sys.executable, "-m", "glm45_launch", "up", "--hostfile", str(hostfile),
                "--base-dir", str(base), "--workdir", str(checkout), "--run-dir", str(box.workdir / "run"),
                *extra, *up_args]
        click.echo(f"rack-in-a-box: {n_hosts} host(s) {', '.join(box.hosts)}; head {box.head}", err=True)
        click.echo("on the head: " + " ".join(argv[1:]), err=True)
        # Run on the head, as a user logged in there would (its own PID/network namespace:
        # the recipe's `pkill -9 python` and `ray stop --force` only touch the box).
        up = box.run_on(1, argv, cwd=str(checkout), stdin=subprocess.DEVNULL)
        report_path = checkout / "smoke-report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            click.echo(
                f"smoke entry on the head: {report['nodes']} node(s), {report['gpus']:.0f} GPUs, "
                f"{len(report['argv'])} train.py arguments, cwd {report['cwd']}, "
                f"GLOO_SOCKET_IFNAME per node: "
                + ", ".join(f"{n['node_ip']}={n['env'].get('GLOO_SOCKET_IFNAME')}" for n in report["per_node"]),
                err=True,
            )
        box.run_on(1, [sys.executable, "-m", "glm45_launch", "down", "--hostfile", str(hostfile),
                       "--run-dir", str(box.workdir / "run")], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    took = time.monotonic() - started
    click.echo(f"demo finished in {took:.0f}s: up exited {up.returncode}"
               + (f"; logs in {workdir}" if workdir else ""), err=True)
    return up.returncode


def _free_prefix() -> str:
    from glm45_launch.testing.rackbox import free_prefix

    return free_prefix("g45demo")

