"""``glm45-launch parity``: a bash launcher under argv-recording shims vs the plan."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.options import PLAN, options, spec_from_options

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


@click.command()
@click.argument("script", type=click.Path(dir_okay=False))
@options(PLAN)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds the script may run under the shims before its process group is killed.")
@click.option("--script-hostfile", default=None, metavar="PATH",
              help="A hostfile path the script hard-codes (besides /root/mpi_rack_hostfile and "
                   "$HOSTFILE, always redirected): redirected to --hostfile too.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--show-secrets", is_flag=True, help="Print API keys/tokens instead of ***.")
def parity(script: str, **kwargs: Any) -> int:
    """Run SCRIPT under argv-recording shims and compare what it runs with the plan.

    Nothing real runs: ray, ssh, pkill, sleep, python/python3, torchrun, nvidia-smi, hf,
    rsync ... are recorded instead (awk and other text tools stay real); stdin is empty, a
    timeout kills the script's process group. The hostfile the script hard-codes
    (/root/mpi_rack_hostfile, or $HOSTFILE) is redirected to --hostfile. Here --env K=V sets
    the script's environment (BASE_DIR, MLP_WORKER_0_HOST, MLP_SOCKET_IFNAME given that way
    are also the plan's inputs). Differences are listed per invocation, per train argument
    (with its group) and per runtime-env key. Exit 0 only when identical.
    """
    import json

    from glm45_launch.core.plan import build_plan
    from glm45_launch.core.secrets import mask_text
    from glm45_launch.sandbox.parity import compare, run_script, secrets_of

    env = script_env(kwargs)
    hostfile = kwargs["hostfile"]
    plan = build_plan(spec_from_options(kwargs))
    run = run_script(script, env=env, hostfile=hostfile, timeout=kwargs["timeout"],
                     script_hostfile=kwargs["script_hostfile"])
    report = compare(plan, run, script)
    text = json.dumps(report.to_json(), indent=2) + "\n" if kwargs["fmt"] == "json" else report.render()
    click.echo(text if kwargs["show_secrets"] else mask_text(text, secrets_of(plan, run)), nl=False)
    return 0 if report.identical else 1
