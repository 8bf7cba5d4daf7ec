"""Click options shared by every command that builds a plan, and the spec they make."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from .hostfile import DEFAULT_HOSTFILE, load_hostfile
from .plan import FRAMEWORKS, LaunchSpec
from .recipes import MODELS

F = Callable[..., Any]

_PLAN_OPTIONS: list[Callable[[F], F]] = [
    click.option("--hostfile", default=str(DEFAULT_HOSTFILE), show_default=True,
                 help="MPI-style hostfile: one host per line, optional slots=N."),
    click.option("--include", multiple=True, metavar="HOSTS",
                 help="Only these hosts (comma- or @-separated; repeatable)."),
    click.option("--exclude", multiple=True, metavar="HOSTS",
                 help="Drop these hosts (comma- or @-separated; repeatable)."),
    click.option("--gpus-per-node", type=int, default=None,
                 help="GPUs per node (default: the hostfile's slots, else 8)."),
    click.option("--head", envvar="MLP_WORKER_0_HOST", default=None,
                 help="Head address [env MLP_WORKER_0_HOST]."),
    click.option("--base-dir", envvar="BASE_DIR", default=None,
                 help="Shared root of checkpoints and data [env BASE_DIR]."),
    click.option("--socket-ifname", envvar="MLP_SOCKET_IFNAME", default=None,
                 help="Network interface [env MLP_SOCKET_IFNAME]; the runtime env keeps "
                      "${MLP_SOCKET_IFNAME} for Ray unless --resolve-env."),
    click.option("--resolve-env", is_flag=True,
                 help="Put values instead of ${VAR}s into the runtime env (deviation)."),
    click.option("--export-env", is_flag=True,
                 help="Export the runtime env's ${VAR}s into every `ray start` (deviation)."),
    click.option("--ssh-user", default="root", show_default=True),
    click.option("--workdir", default=None,
                 help="Framework checkout holding train.py; the head starts there [default: cwd]."),
    click.option("--framework", type=click.Choice(FRAMEWORKS), default="miles", show_default=True,
                 help="Package of the dynamic-sampling filter."),
    click.option("--model", type=click.Choice(list(MODELS)), default="glm4.5-355B-A32B",
                 show_default=True),
    click.option("--actor-num-nodes", type=int, default=None,
                 help="--actor-num-nodes of train.py (default: the recipe's 8)."),
    click.option("--checkpoint-dir", default=None,
                 help="Adds --load DIR --save DIR --save-interval N (the recipe saves nothing)."),
    click.option("--save-interval", type=int, default=20, show_default=True),
    click.option("--entry", default="train.py", show_default=True,
                 help="Script the job runs instead of train.py (e.g. a smoke entry)."),
    click.option("--dashboard-host", default=None,
                 help="Bind the Ray dashboard here instead of 0.0.0.0 (deviation)."),
    click.option("--no-cleanup", is_flag=True, help="Skip the recipe's pkill/ray stop cleanup."),
]


def plan_options(func: F) -> F:
    """Decorate a command with every option that shapes the plan."""
    for option in reversed(_PLAN_OPTIONS):
        func = option(func)
    return func


PLAN_OPTION_NAMES = (
    "hostfile", "include", "exclude", "gpus_per_node", "head", "base_dir", "socket_ifname",
    "resolve_env", "export_env", "ssh_user", "workdir", "framework", "model",
    "actor_num_nodes", "checkpoint_dir", "save_interval", "entry", "dashboard_host",
    "no_cleanup",
)


def pop_plan_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the plan options out of a command's kwargs, leaving the command's own."""
    return {name: kwargs.pop(name) for name in PLAN_OPTION_NAMES}


def spec_from_options(opts: dict[str, Any]) -> LaunchSpec:
    """Read the hostfile and turn the options into a ``LaunchSpec`` (the only I/O here)."""
    hostfile = load_hostfile(opts["hostfile"]).select(opts["include"], opts["exclude"])
    return LaunchSpec(
        hostfile=hostfile,
        head=opts["head"] or None,
        base_dir=opts["base_dir"] or None,
        socket_ifname=opts["socket_ifname"] or None,
        ssh_user=opts["ssh_user"],
        workdir=os.path.abspath(opts["workdir"]) if opts["workdir"] else os.getcwd(),
        gpus_per_node=opts["gpus_per_node"],
        actor_num_nodes=opts["actor_num_nodes"],
        framework=opts["framework"],
        model=opts["model"],
        resolve_env=opts["resolve_env"],
        export_env=opts["export_env"],
        checkpoint_dir=opts["checkpoint_dir"],
        save_interval=opts["save_interval"],
        entry=opts["entry"],
        dashboard_host=opts["dashboard_host"],
        cleanup=not opts["no_cleanup"],
    )
