"""``glm45-launch parity``: a bash launcher under argv-recording shims vs the plan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from glm45_launch.cli.options import PLAN, options, output_format, seconds, spec_from_options

F = TypeVar("F", bound=Callable[..., Any])

# Script environment variables that are also the plan's inputs.
PLAN_INPUTS = (("BASE_DIR", "base_dir"), ("MLP_WORKER_0_HOST", "head"), ("MLP_SOCKET_IFNAME", "socket_ifname"))


def script_env(opts: dict[str, Any]) -> dict[str, str]:
    """The script's environment from the plan options and ``--env`` (which moves into it).

    ``--env K=V`` sets the script's environment here (not the runtime env); BASE_DIR,
    MLP_WORKER_0_HOST and MLP_SOCKET_IFNAME set that way are also the plan's inputs.
    """
    from glm45_launch.core.overrides import parse_env

    env = {key: opts[opt] for key, opt in PLAN_INPUTS if opts.get(opt)}
    env.update(parse_env(text) for text in opts.pop("env_args", ()))
    opts["env_args"] = ()
    for key, opt in PLAN_INPUTS:
        opts[opt] = env.get(key)
    return env


def recording_options(func: F) -> F:
    """The options of a recording, shared by parity and import: the script's arguments (after
    ``--``), its time limit, the paths it hard-codes or reads."""
    decorators = [
        click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS...]"),
        click.option("--timeout", type=seconds(0.1), default=30.0, show_default=True,
                     help="Seconds the script may run under the shims before the sandbox is killed."),
        click.option("--script-hostfile", default=None, metavar="PATH",
                     help="A hostfile path the script hard-codes (besides /root/mpi_rack_hostfile and "
                          "$HOSTFILE, always redirected): redirected to --hostfile too."),
        click.option("--expose", multiple=True, metavar="PATH[:INSIDE]",
                     help="Also show PATH to the script (a read-only copy; at INSIDE if given). The "
                          "sandbox shows only the script's own folder and the hostfile."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def expose_paths(values: tuple[str, ...]) -> list[Path | tuple[Path, str]]:
    """``--expose PATH`` or ``PATH:INSIDE`` values (INSIDE absolute)."""
    from glm45_launch.errors import LaunchError

    out: list[Path | tuple[Path, str]] = []
    for value in values:
        src, sep, inside = value.partition(":")
        if not Path(src).exists():
            raise LaunchError(f"--expose {value}: {src}: no such file or directory")
        if sep and not inside.startswith("/"):
            raise LaunchError(f"--expose {value}: the path inside ({inside!r}) must be absolute")
        out.append((Path(src), inside) if sep else Path(src))
    return out


@click.command()
@click.argument("script", type=click.Path(dir_okay=False), required=False)
@recording_options
@options(PLAN)
@click.option("--snapshot", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Instead of a script: upstream's recorded commands of one (radixark/miles "
                   "tests/snapshots/launch_scripts/...), compared with the plan; nothing runs.")
@click.option("--rank", type=click.IntRange(min=0), default=None,
              help="The script is per node (`script ... NODE_RANK ...`): record what node RANK runs and "
                   "compare it with the plan's head (0) or with one worker's commands. {rank}, {host} and "
                   "{head} in the script's arguments become the node's rank and address and the head's.")
@click.option("--as-worker", is_flag=True, help="--rank 1: compare the script with one worker's commands.")
@output_format()
@click.option("--show-secrets", is_flag=True, help="Print API keys/tokens instead of ***.")
def parity(script: str | None, **kwargs: Any) -> int:
    """Run SCRIPT in a sandbox under argv-recording shims and compare what it runs with the plan.

    Nothing real runs: ray, ssh, pkill, sleep, python/python3, torchrun, nvidia-smi, hf,
    rsync ... are recorded instead (awk and other text tools stay real), in a bubblewrap
    sandbox that sees only the script's folder and the hostfile; stdin is empty, a timeout
    kills the sandbox. The hostfile the script hard-codes (/root/mpi_rack_hostfile, or
    $HOSTFILE) is redirected to --hostfile. Here --env K=V sets the script's environment
    (BASE_DIR, MLP_WORKER_0_HOST, MLP_SOCKET_IFNAME given that way are also the plan's
    inputs). Polls of the cluster (ray status, a GPU count) hear the planned cluster; a wait
    loop that never ends under the recorder is ended. Differences are listed per invocation,
    per train argument (with its group) and per runtime-env key. Exit 0 only when identical.

    --snapshot FILE compares the plan with what upstream recorded of a launch script at some
    revision instead: its worker loop runs over --hostfile, <REPO_ROOT> is --workdir; upstream
    records with the head at 127.0.0.1 (give --head 127.0.0.1 to match).
    """
    import json
    import shutil
    import sys

    from glm45_launch.core.builder import build_plan
    from glm45_launch.core.secrets import mask_text
    from glm45_launch.errors import LaunchError
    from glm45_launch.sandbox.parity import compare, run_script, secrets_of
    from glm45_launch.sandbox.pernode import node_args
    from glm45_launch.sandbox.record import Cluster

    if kwargs["rank"] is not None and kwargs["as_worker"]:
        raise LaunchError("--rank and --as-worker: give one")
    snapshot = kwargs["snapshot"]
    if (script is None) == (snapshot is None):
        raise LaunchError("parity: give a SCRIPT to record, or --snapshot FILE")
    if snapshot is not None and (kwargs["script_args"] or kwargs["expose"] or kwargs["script_hostfile"]
                                 or kwargs["rank"] is not None or kwargs["as_worker"]):
        raise LaunchError("--snapshot: nothing runs (no -- ARGS, --expose, --script-hostfile, --rank or --as-worker)")
    rank = 1 if kwargs["as_worker"] else kwargs["rank"]
    env = script_env(kwargs)
    hostfile = kwargs["hostfile"]
    plan = build_plan(spec_from_options(kwargs))
    if snapshot is not None:
        import os

        from glm45_launch.sandbox.snapshot import compare_snapshot, load_snapshot

        run = load_snapshot(snapshot, hosts=plan.spec.hostfile.names, repo_root=os.path.abspath(plan.spec.workdir))
        report = compare_snapshot(plan, run, snapshot)
    else:
        assert script is not None
        args = node_args(plan, kwargs["script_args"], rank)
        cluster = Cluster(plan.cluster.total_gpus, plan.cluster.gpus_per_node, len(plan.cluster.nodes))
        run = run_script(script, env=env, hostfile=hostfile, timeout=kwargs["timeout"],
                         script_hostfile=kwargs["script_hostfile"], args=args,
                         expose=expose_paths(kwargs["expose"]), cluster=cluster)
        report = compare(plan, run, script, rank=rank)
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None  # a pipe: one line per item
    text = json.dumps(report.to_json(), indent=2) + "\n" if kwargs["fmt"] == "json" else report.render(width)
    click.echo(text if kwargs["show_secrets"] else mask_text(text, secrets_of(plan, run)), nl=False)
    return 0 if report.identical else 1
