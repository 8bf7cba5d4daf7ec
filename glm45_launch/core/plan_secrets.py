"""A plan's secrets, and the copy of a plan fit to print.

``Plan`` keeps its secrets raw, since the executor must run them; whatever shows a plan (the
renderings, the logs) masks it first with :func:`mask_plan`, or masks text with the values
:func:`plan_secrets` finds. ``glm45-launch plan --show-secrets`` prints them.
"""

from __future__ import annotations

from dataclasses import replace

from glm45_launch.core.plan import Plan
from glm45_launch.core.secrets import argv_secrets, is_secret_env, mask_argv, mask_env, mask_text
from glm45_launch.core.steps import SubmitStep


def plan_secrets(plan: Plan) -> list[str]:
    """Every secret value ``plan`` holds, longest first."""
    found = [v for k, v in plan.env_vars if v and is_secret_env(k)]
    for step in plan.steps:
        found += [v for k, v in step.env if v and is_secret_env(k)]
        for command in step.commands:
            found += argv_secrets(command)
    for _, words in plan.train_groups:
        found += argv_secrets(words)
    return sorted(set(found), key=len, reverse=True)


def mask_plan(plan: Plan) -> Plan:
    """A copy of ``plan`` fit to print: every secret replaced by ``***`` (never run it)."""
    secrets = plan_secrets(plan)
    if not secrets:
        return plan
    steps = tuple(
        replace(s, env=mask_env(s.env, secrets),
                commands=tuple(tuple(mask_argv(c, secrets)) for c in s.commands),
                **({"options": tuple(mask_argv(s.options, secrets))} if isinstance(s, SubmitStep) else {}))
        for s in plan.steps
    )
    return replace(
        plan,
        steps=steps,
        settings=tuple((k, mask_text(v, secrets)) for k, v in plan.settings),
        train=replace(plan.train, prefix=tuple(mask_argv(plan.train.prefix, secrets)),
                      groups=tuple((g, tuple(mask_argv(w, secrets))) for g, w in plan.train_groups)),
        env_vars=mask_env(plan.env_vars, secrets),
        notes=tuple(mask_text(n, secrets) for n in plan.notes),
        warnings=tuple(mask_text(w, secrets) for w in plan.warnings),
    )
