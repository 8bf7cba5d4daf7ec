"""``glm45-launch validate``: check the config before anything runs."""

from __future__ import annotations

import json
from typing import Any

import click

from glm45_launch.cli.options import PLAN, options, output_format, spec_from_options


@click.command()
@options(PLAN)
@click.option("--show-layout", is_flag=True,
              help="Print the pipeline split and the TP/CP/DP/PP/EP rank groups (megatron-core).")
@click.option("--no-libs", is_flag=True,
              help="Pure checks only: skip the megatron-core and sglang checks.")
@output_format()
def validate(**kwargs: Any) -> int:
    """Check the plan's trainer arguments and hostfile; exit 0 when valid, 1 otherwise.

    Pure checks (parallel sizes vs world size, layer and expert splits, rollout engines,
    batch rules, KL/save/eval flags, enough nodes) always run. With megatron-core and
    sglang installed (pip install 'glm45-launch[validate]') their own rules run too:
    TransformerConfig, the pipeline split, and every --sglang-* option against sglang's
    ServerArgs. A library that is not installed is reported as skipped.
    """
    from glm45_launch.checks.rules import check_plan
    from glm45_launch.core.builder import build_plan
    from glm45_launch.errors import LaunchError

    fmt, show_layout, no_libs = kwargs.pop("fmt"), kwargs.pop("show_layout"), kwargs.pop("no_libs")
    plan = build_plan(spec_from_options(kwargs))
    problems = check_plan(plan)
    notes: list[str] = []
    layout: list[str] = []
    if not no_libs:
        from glm45_launch.checks.libs import check_libraries

        report = check_libraries(plan, show_layout=show_layout)
        problems += report.problems
        notes, layout = report.notes, report.layout
    elif show_layout:
        layout = ["rank layout skipped: --no-libs"]

    def shown(n: int | None) -> str:
        return "?" if n is None else str(n)

    what = (f"{plan.recipe_name} / {plan.model.name}: {shown(plan.job.actor_nodes)} actor node(s) x "
            f"{shown(plan.job.actor_gpus_per_node)} GPUs, {len(plan.cluster.nodes)} node(s) in the cluster")
    if fmt == "json":
        click.echo(json.dumps({
            "ok": not problems, "config": what, "problems": [p.to_json() for p in problems],
            "notes": notes, "layout": layout,
        }, indent=2))
    else:
        lines = [f"OK: {what}"] if not problems else [f"{len(problems)} problem(s) with {what}:"]
        lines += [f"  - {p.message}" for p in problems]
        lines += [f"  {n}" for n in notes] + layout
        click.echo("\n".join(lines))
    if problems:
        raise LaunchError(f"invalid config: {len(problems)} problem(s), listed above", exit_code=1)
    return 0
