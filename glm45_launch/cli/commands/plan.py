"""``glm45-launch plan``: print the launch plan."""

from __future__ import annotations

from typing import Any

import click

from glm45_launch.cli.options import (
    LAUNCH,
    NETCHECK,
    PLAN,
    WATCH,
    options,
    output_format,
    spec_from_options,
    watch_from_options,
)


@click.command()
@options(PLAN, LAUNCH, WATCH, NETCHECK)
@output_format("bash")
@click.option("--show-secrets", is_flag=True,
              help="Print WANDB_API_KEY / --wandb-key values instead of *** (in every format).")
@click.option("--prepare", is_flag=True,
              help="Also show the preparation before the job (python profile: downloads, FP8 and torch_dist "
                   "conversion, copies to --model-local-dir), each step with its host and skip check.")
def plan(**kwargs: Any) -> None:
    """Print the launch plan (pure: nothing runs, nothing is contacted): what `up` with the same
    options runs, its health watch, diagnostics and restarts included.

    Config problems (`glm45-launch validate`) are listed among the warnings.
    """
    from dataclasses import replace

    from glm45_launch.checks.rules import check_plan
    from glm45_launch.core.builder import build_plan
    from glm45_launch.core.operations import build_operations
    from glm45_launch.core.prepare_plan import build_prepare
    from glm45_launch.core.render import render

    fmt = kwargs.pop("fmt")
    show_secrets = kwargs.pop("show_secrets")
    prepare = kwargs.pop("prepare")
    built = build_plan(spec_from_options(kwargs))
    watch = watch_from_options(kwargs)
    problems = check_plan(built)
    built = replace(built, warnings=built.warnings + tuple(f"invalid config: {p}" for p in problems))
    click.echo(render(built, fmt, show_secrets=show_secrets, ops=build_operations(built, watch),
                      prepare=build_prepare(built) if prepare else None), nl=False)
