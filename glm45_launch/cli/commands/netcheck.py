"""``glm45-launch netcheck``: test the network the job will use, and name the node or link that
is slow or broken (the check `up` runs after the join, on its own)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click

from glm45_launch.cli.options import (
    NETCHECK,
    PARALLEL,
    PLAN,
    SSH,
    by_name,
    options,
    output_format,
    seconds,
    spec_from_options,
    ssh_from_options,
    watch_from_options,
    without,
)
from glm45_launch.errors import LaunchError


@click.command()
@options(PLAN, SSH, PARALLEL)
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Logs, the report (netcheck/netcheck.json) and the pair picture [default: ./runs/<time>].")
@click.option("--keep-cluster", is_flag=True, help="Leave the Ray cluster the check brought up running.")
@click.option("--join-timeout", type=seconds(1), default=180.0, show_default=True,
              help="Seconds to wait for every node and GPU to join.")
@click.option("--force", is_flag=True, hidden=True, help="Accepted as `up` takes it: netcheck judges no layout.")
@options(by_name("no_overlap"))
@options(without(NETCHECK, "no_netcheck"), by_name("no_collect"), by_name("collect_timeout"))
@output_format()
def netcheck(**kwargs: Any) -> int:
    """Bring the cluster up as `up` does (or use the running one: --external-ray), run the
    network check the job would get, then stop Ray (unless --keep-cluster).

    In the job's runtime env, one rank per GPU (NCCL) or per node (Gloo), each pinned to its
    node: the socket-interface variables on every node, an all-reduce per node, one over the
    cluster, and node pairs (a ring, then halving) when one fails, hangs or is slow. It does
    not judge the training layout (that is `validate`). Exit 0 exactly when the check passed.
    """
    from glm45_launch.core.builder import build_plan
    from glm45_launch.runtime.executor import ExecOptions
    from glm45_launch.runtime.netcheck_run import NetcheckOptions
    from glm45_launch.runtime.netcheck_run import netcheck as run_netcheck
    from glm45_launch.runtime.runtime import Runtime

    fmt = kwargs.pop("fmt")
    spec = spec_from_options(kwargs)
    if spec.external_ray:  # a running cluster may run someone's job: the recipe's kills stay out
        spec = replace(spec, cleanup=False)
    plan = build_plan(spec)
    watch = watch_from_options(kwargs)
    rt = Runtime.real(ssh_from_options(kwargs, spec.ssh_user), parallel=kwargs["parallel"])
    opts = NetcheckOptions(run_dir=kwargs["run_dir"], keep_cluster=kwargs["keep_cluster"], watch=watch,
                           exec=ExecOptions(join_timeout=kwargs["join_timeout"]))
    result = run_netcheck(plan, opts, rt)
    if fmt == "json":
        click.echo(json.dumps(result.report if result.report is not None else
                              {"ok": False, "problems": [{"hosts": [], "what": result.error}]}, indent=2))
    if result.error:
        raise LaunchError(result.error, exit_code=result.exit_code)
    return result.exit_code
