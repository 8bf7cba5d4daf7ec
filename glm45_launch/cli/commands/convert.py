"""``glm45-launch convert``: HF -> Megatron torch_dist, one torchrun per node (RECIPE.md §6)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from glm45_launch.cli.options import (
    plan_options,
    pop_plan_options,
    spec_from_options,
    ssh_from_options,
    ssh_options,
)


@click.command()
@plan_options
@ssh_options
@click.option("--master-port", type=int, default=12345, show_default=True,
              help="torchrun rendezvous port on the head.")
@click.option("--megatron-path", default="/root/Megatron-LM", show_default=True,
              help="PYTHONPATH of the conversion.")
@click.option("--hf-checkpoint", "hf_path", default=None,
              help="HF checkpoint to convert [default: the recipe's --hf-checkpoint].")
@click.option("--save", "save_path", default=None,
              help="torch_dist target [default: the recipe's --ref-load].")
@click.option("--force", is_flag=True, help="Convert even if the target holds latest_checkpointed_iteration.txt.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=6 * 3600.0, show_default=True,
              help="Seconds the conversion may run on each node.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Logs of this conversion [default: ./runs/<time>].")
@click.option("--dry-run", is_flag=True, help="Print the conversion plan and exit: nothing runs.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output of --dry-run.")
def convert(**kwargs: Any) -> int:
    """Convert the HF checkpoint to Megatron torch_dist on every node of the hostfile.

    One `torchrun --nnodes N --node-rank I --master-addr HEAD` per node, all at once, in the
    framework checkout (--workdir). Skipped when the target already holds
    latest_checkpointed_iteration.txt. Takes the same plan options as `plan`/`up`, so the
    model args and the target are the ones the training run loads.
    """
    import json

    from glm45_launch.core.convert_plan import plan_convert, render_convert

    spec = spec_from_options(pop_plan_options(kwargs))
    cplan = plan_convert(spec, master_port=kwargs["master_port"], megatron_path=kwargs["megatron_path"],
                         hf_checkpoint=kwargs["hf_path"], save=kwargs["save_path"])
    if kwargs["dry_run"]:
        text = json.dumps(cplan.to_json(), indent=2) + "\n" if kwargs["fmt"] == "json" else render_convert(cplan)
        click.echo(text, nl=False)
        return 0
    return _run(cplan, kwargs)


def _run(cplan: Any, kwargs: dict[str, Any]) -> int:
    """Check, then run every node's torchrun at once: the head's here if it is this machine."""
    from concurrent.futures import ThreadPoolExecutor

    from glm45_launch.core.convert_plan import step_shell_command
    from glm45_launch.errors import LaunchError
    from glm45_launch.runtime import cluster
    from glm45_launch.runtime.executor import Console, Outcome, default_run_dir, run_on_hosts
    from glm45_launch.runtime.local import LocalRunner
    from glm45_launch.runtime.ssh import SshRunner

    ssh = ssh_from_options(kwargs, cplan.ssh_user)
    run_dir = Path(kwargs["run_dir"]).resolve() if kwargs["run_dir"] else default_run_dir()
    console = Console()
    local = LocalRunner()
    remote = SshRunner(ssh)
    head_here = cluster.is_local_address(cplan.master_addr)

    def log_path(host: str) -> Path:
        return run_dir / "convert" / f"{host.replace(':', '_')}.log"

    if not kwargs["force"]:
        check = cplan.check
        if head_here:
            exit_code = local.run(check.commands[0], log_path(check.host), timeout_s=60).exit_code
        else:
            exit_code = remote.run(check.host, step_shell_command(check), log_path(check.host), timeout_s=60).exit_code
        if exit_code == 0:
            console.say(cplan.skip_message, "green")
            return 0
    console.say(f"converting {cplan.hf_checkpoint} -> {cplan.save} on {len(cplan.steps)} node(s); logs in {run_dir}")
    timeout = kwargs["timeout_s"]
    local_steps = [s for s in cplan.steps if head_here and s.host == cplan.master_addr]
    remote_steps = [s for s in cplan.steps if s not in local_steps]
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        futures = [pool.submit(local.run, s.commands[0], log_path(s.host), console.echo_for(s.host),
                               dict(s.env), s.cwd, timeout) for s in local_steps]
        results = run_on_hosts(remote, [(s.host, step_shell_command(s)) for s in remote_steps],
                               max(1, len(remote_steps)), log_path, console.echo_for, timeout)
        for step, fut in zip(local_steps, futures, strict=True):
            res = fut.result()
            outcomes.append(Outcome.of(step.host, "convert (here)", res))
    for r in results:
        outcomes.append(Outcome.of(r.host, "convert", r))
    console.table("glm45-launch convert", outcomes)
    failed = [o.host for o in outcomes if not o.ok]
    if failed:
        raise LaunchError(f"conversion failed on: {', '.join(failed)} (logs in {run_dir / 'convert'})", exit_code=1)
    console.say(f"converted: {cplan.save} ({time.strftime('%H:%M:%S')})", "green")
    return 0
