"""``glm45-launch plan``: print the launch plan."""

from __future__ import annotations

from typing import Any

import click

from ..options import plan_options, pop_plan_options, spec_from_options


@click.command()
@plan_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "bash"]), default="text",
              show_default=True, help="text: readable; json: invocations + steps; bash: a script.")
def plan(**kwargs: Any) -> None:
    """Print the launch plan (pure: nothing runs, nothing is contacted)."""
    from ..plan import build_plan
    from ..render import render

    fmt = kwargs.pop("fmt")
    spec = spec_from_options(pop_plan_options(kwargs))
    click.echo(render(build_plan(spec), fmt), nl=False)
