"""``glm45-launch convert``: HF -> Megatron torch_dist, one torchrun per node (RECIPE.md §6)."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.options import (
    PLAN,
    SSH,
    options,
    output_format,
    seconds,
    spec_from_options,
    ssh_from_options,
    without,
)


@click.command()
@options(without(PLAN, "save"), SSH)  # --save here is the conversion's target
@click.option("--master-port", type=int, default=12345, show_default=True,
              help="torchrun rendezvous port on the head.")
@click.option("--hf-checkpoint", "hf_path", default=None,
              help="HF checkpoint to convert [default: the recipe's --hf-checkpoint].")
@click.option("--save", "save_path", default=None,
              help="torch_dist target [default: the recipe's --ref-load].")
@click.option("--force", is_flag=True, help="Convert even if the target holds latest_checkpointed_iteration.txt.")
@click.option("--timeout", "timeout_s", type=seconds(1), default=6 * 3600.0, show_default=True,
              help="Seconds the conversion may run on each node.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Logs of this conversion [default: ./runs/<time>].")
@click.option("--dry-run", is_flag=True, help="Print the conversion plan and exit: nothing runs.")
@output_format()
def convert(**kwargs: Any) -> int:
    """Convert the HF checkpoint to Megatron torch_dist on every node of the hostfile.

    One `torchrun --nnodes N --node-rank I --master-addr HEAD` per node, all at once, in the
    framework checkout (--workdir). Skipped when the target already holds
    latest_checkpointed_iteration.txt. Takes the same plan options as `plan`/`up`, so the
    model args and the target are the ones the training run loads.
    """
    import json

    from glm45_launch.core.convert_plan import plan_convert, render_convert

    spec = spec_from_options(kwargs)
    cplan = plan_convert(spec, master_port=kwargs["master_port"],
                         hf_checkpoint=kwargs["hf_path"], save=kwargs["save_path"])
    if kwargs["dry_run"]:
        text = json.dumps(cplan.to_json(), indent=2) + "\n" if kwargs["fmt"] == "json" else render_convert(cplan)
        click.echo(text, nl=False)
        return 0
    return _run(cplan, kwargs)


def _run(cplan: Any, kwargs: dict[str, Any]) -> int:
    """Check, then run every node's torchrun at once: the head's here if it is this machine."""
    from glm45_launch.runtime.rundir import prepare_run_dir
    from glm45_launch.runtime.runtime import Runtime
    from glm45_launch.runtime.usecases import convert, raise_if_failed

    rt = Runtime.real(ssh_from_options(kwargs, cplan.ssh_user))
    run_dir = prepare_run_dir(kwargs["run_dir"])
    result = convert(cplan, rt, run_dir, kwargs["timeout_s"], force=kwargs["force"])
    if not result.skipped:
        rt.reporter.table("glm45-launch convert", result.rows)
        raise_if_failed(result.rows, "conversion", f" (logs in {run_dir / 'convert'})")
    return 0
