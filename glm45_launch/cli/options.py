"""Click options shared by every command that builds a plan, and the spec they make."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from glm45_launch.core.hostfile import DEFAULT_HOSTFILE, load_hostfile
from glm45_launch.core.plan import FRAMEWORKS, LaunchSpec
from glm45_launch.core.variants import HARDWARE, PROFILES, Variant
from glm45_launch.recipes import BASH_RECIPE, MODELS

if TYPE_CHECKING:
    from glm45_launch.runtime.ssh import SshOptions

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
                 help="Bind the Ray dashboard (it runs submitted jobs, no authentication) here "
                      "instead of 0.0.0.0: 127.0.0.1 or the head's address (deviation)."),
    click.option("--no-cleanup", is_flag=True, help="Skip the recipe's pkill/ray stop cleanup."),
    # The recipe, its variants (RECIPE.md §3, §5) and overrides (variants.py, overrides.py).
    click.option("--recipe", "recipe_file", default=None, metavar="FILE",
                 help="Recipe file (TOML) instead of the bash recipe (see `recipe_file.py`)."),
    click.option("--profile", type=click.Choice(PROFILES), default="bash", show_default=True,
                 help="bash: the bash recipe (GSPO, TP8/PP4/CP2/EP16); python: the upstream Python "
                      "launcher (GRPO, parallelism by node count; Blackwell only)."),
    click.option("--hardware", type=click.Choice(list(HARDWARE)), default=None,
                 help="H100 (8 GPUs/node), GB200 or GB300 (4 GPUs/node, Blackwell)."),
    click.option("--mtp/--no-mtp", default=None,
                 help="EAGLE/MTP speculative decoding (default: on in bash, off in python)."),
    click.option("--mis", is_flag=True,
                 help="Train-inference mismatch correction: write the TIS/RS YAML and pass it."),
    click.option("--mis-no-rs", is_flag=True, help="With --mis: use_rs false."),
    click.option("--r3", is_flag=True, help="Rollout routing replay (--use-rollout-routing-replay)."),
    click.option("--rollout-fp8", is_flag=True,
                 help="FP8 rollout: the HF checkpoint's -FP8 copy and the FP8 SGLang flags (Blackwell)."),
    click.option("--kv-cache-fp8", is_flag=True, help="--sglang-kv-cache-dtype fp8_e4m3."),
    click.option("--job-files-dir", default=None, metavar="DIR",
                 help="Where files the job reads (--mis) are written, on the head "
                      "[default: BASE_DIR/glm45-launch]."),
    click.option("--set", "set_args", multiple=True, metavar="GROUP.--FLAG=VALUE",
                 help="Replace a flag's values in a group (appended when absent; repeatable)."),
    click.option("--unset", "unset_args", multiple=True, metavar="GROUP.--FLAG",
                 help="Remove a flag from a group (repeatable)."),
    click.option("--extra-args", multiple=True, metavar="ARGS",
                 help="Words appended after every group (shell-split; repeatable)."),
    click.option("--env", "env_args", multiple=True, metavar="K=V",
                 help="Runtime env var: replaced in place or appended (repeatable)."),
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
    "no_cleanup", "recipe_file", "profile", "hardware", "mtp", "mis", "mis_no_rs", "r3", "rollout_fp8",
    "kv_cache_fp8", "job_files_dir", "set_args", "unset_args", "extra_args", "env_args",
)


def pop_plan_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the plan options out of a command's kwargs, leaving the command's own."""
    return {name: kwargs.pop(name) for name in PLAN_OPTION_NAMES}


def spec_from_options(opts: dict[str, Any]) -> LaunchSpec:
    """Read the hostfile and turn the options into a ``LaunchSpec`` (the only I/O here)."""
    from glm45_launch.core.overrides import build_overrides
    from glm45_launch.core.recipe_file import load_recipe

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
        recipe=load_recipe(opts["recipe_file"]) if opts["recipe_file"] else BASH_RECIPE,
        variant=Variant(
            profile=opts["profile"], hardware=opts["hardware"], mtp=opts["mtp"], mis=opts["mis"],
            mis_use_rs=not opts["mis_no_rs"], r3=opts["r3"], rollout_fp8=opts["rollout_fp8"],
            kv_cache_fp8=opts["kv_cache_fp8"], files_dir=opts["job_files_dir"],
        ),
        overrides=build_overrides(opts["set_args"], opts["unset_args"], opts["extra_args"], opts["env_args"]),
    )


_SSH_OPTIONS: list[Callable[[F], F]] = [
    click.option("--identity", "-i", multiple=True, metavar="KEY",
                 help="SSH private key (repeatable; default: ssh-agent and ~/.ssh keys)."),
    click.option("--known-hosts", multiple=True, metavar="FILE",
                 help="Extra known_hosts file (repeatable); ~/.ssh/known_hosts is always read."),
    click.option("--accept-new-host-keys", is_flag=True,
                 help="Record unknown host keys (a changed key is still refused)."),
    click.option("--ssh-port", type=int, default=None, help="SSH port (default: 22 / ~/.ssh/config)."),
    # At least 1 s: Fabric drops a connect timeout that rounds to 0, and `timeout 0` never fires.
    click.option("--connect-timeout", type=click.FloatRange(min=1), default=10.0, show_default=True,
                 help="Seconds to connect to a host."),
    click.option("--command-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
                 help="Seconds a remote command may run (enforced on both ends)."),
    click.option("--retries", type=int, default=3, show_default=True,
                 help="Connection attempts per host (with backoff)."),
]


def ssh_options(func: F) -> F:
    """Decorate a command with the options that say how to reach the hosts."""
    for option in reversed(_SSH_OPTIONS):
        func = option(func)
    return func


def ssh_from_options(kwargs: dict[str, Any], user: str) -> SshOptions:
    """Take the SSH options out of ``kwargs`` and build ``SshOptions``."""
    from glm45_launch.errors import LaunchError
    from glm45_launch.runtime.ssh import SshOptions

    for name in ("connect_timeout", "command_timeout"):
        if kwargs[name] <= 0:
            raise LaunchError(f"--{name.replace('_', '-')}: must be > 0, got {kwargs[name]}")
    if kwargs["retries"] < 1:
        raise LaunchError(f"--retries: must be >= 1, got {kwargs['retries']}")
    for path in kwargs["identity"]:
        if not os.path.isfile(path):
            raise LaunchError(f"--identity: {path}: no such key file")
    return SshOptions(
        user=user,
        port=kwargs.pop("ssh_port"),
        identity=tuple(kwargs.pop("identity")),
        known_hosts=tuple(kwargs.pop("known_hosts")),
        accept_new_host_keys=kwargs.pop("accept_new_host_keys"),
        connect_timeout=kwargs.pop("connect_timeout"),
        command_timeout=kwargs.pop("command_timeout"),
        retries=kwargs.pop("retries"),
    )
