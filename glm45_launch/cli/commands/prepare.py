"""``glm45-launch prepare``: what upstream's Python launcher runs before it trains (downloads,
FP8 copy, torch_dist conversion, each node's local copy), each step skipped when its work is done."""

from __future__ import annotations

import json
from typing import Any

import click

from glm45_launch.cli.options import (
    PARALLEL,
    PLAN,
    SSH,
    options,
    output_format,
    seconds,
    spec_from_options,
    ssh_from_options,
)


@click.command()
@options(PLAN, SSH, PARALLEL)
@click.option("--timeout", "timeout_s", type=seconds(1), default=24 * 3600.0, show_default=True,
              help="Seconds one step (a download, a conversion, a node's copy) may run.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Logs (prepare/<host>.log) and prepare.json [default: ./runs/<time>].")
@click.option("--dry-run", is_flag=True, help="Print the preparation (as `plan --prepare`) and exit: nothing runs.")
@output_format()
def prepare(**kwargs: Any) -> int:
    """Prepare the model and data the way upstream's scripts/run_glm45_355b_a32b.py does
    (--profile python): download the model and the task's datasets, the FP8 copy (--rollout-fp8),
    the torch_dist conversion on every node, then each node's copy into --model-local-dir.

    Each step runs only when its check finds the work undone (the files present, the tracker
    reading `release`, rsync finding the local copy up to date). A node whose copy fails is named;
    the other nodes finish theirs. Exit 0 when every step ran or was skipped.
    """
    from glm45_launch.core.builder import build_plan
    from glm45_launch.core.prepare_plan import build_prepare, prepare_lines
    from glm45_launch.errors import ExitCode, LaunchError
    from glm45_launch.runtime.prepare import prepare as run_prepare
    from glm45_launch.runtime.records import RunRecords
    from glm45_launch.runtime.rundir import prepare_run_dir
    from glm45_launch.runtime.runtime import Runtime

    spec = spec_from_options(kwargs)
    pplan = build_prepare(build_plan(spec))
    if kwargs["dry_run"]:
        text = json.dumps(pplan.to_json(), indent=2) + "\n" if kwargs["fmt"] == "json" \
            else "\n".join(prepare_lines(pplan)) + "\n"
        click.echo(text, nl=False)
        return 0
    rt = Runtime.real(ssh_from_options(kwargs, spec.ssh_user), parallel=kwargs["parallel"])
    run_dir = prepare_run_dir(kwargs["run_dir"])
    result = run_prepare(pplan, rt, run_dir / "prepare", kwargs["timeout_s"])
    RunRecords(run_dir, rt.reporter.warn).write_json("prepare.json", result.to_json())
    if kwargs["fmt"] == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        rt.reporter.table("glm45-launch prepare", result.rows(not_run=False))
    if result.error:
        raise LaunchError(result.error, exit_code=ExitCode.FAILED)
    return 0
