"""Render a plan as readable text, JSON, or a standalone bash script."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from glm45_launch.core.flags import split_flags
from glm45_launch.core.operations import LATEST_ITERATION, Operations, build_operations
from glm45_launch.core.plan import Plan
from glm45_launch.core.plan_secrets import mask_plan, plan_secrets
from glm45_launch.core.prepare_plan import PreparePlan, prepare_lines
from glm45_launch.core.quoting import comment, quote, shell_join
from glm45_launch.core.secrets import RUNTIME_ENV_FLAG, mask_text
from glm45_launch.core.steps import (
    HEAD,
    WORKER,
    DiagnoseStep,
    HoldStep,
    JoinStep,
    NetcheckStep,
    Step,
    SubmitStep,
    WriteFileStep,
)
from glm45_launch.errors import LaunchError

FORMATS = ("text", "json", "bash")


def render(plan: Plan, fmt: str, show_secrets: bool = False, ops: Operations | None = None,
           prepare: PreparePlan | None = None) -> str:
    """``plan`` as text, json or bash; secrets are ``***`` unless ``show_secrets``. ``ops``: what
    runs around the job (default: :func:`build_operations` with the default settings);
    ``prepare``: the preparation before it (text and json)."""
    if fmt == "json":
        shown = plan if show_secrets else mask_plan(plan)
        data = {**shown.to_json(), "operations": (ops or build_operations(shown)).to_json(plan.cluster.ssh_user)}
        if prepare is not None:
            data["prepare"] = prepare.to_json()
        text = json.dumps(data, indent=2)
        return text if show_secrets else mask_text(text, plan_secrets(plan))
    if fmt == "bash":
        if prepare is not None:
            raise LaunchError("--prepare: the preparation is shown in --format text or json, not bash")
        return render_bash(plan, show_secrets)
    return render_text(plan, show_secrets, ops, prepare)


def _masked(plan: Plan, show: Callable[[Plan], str]) -> str:
    """``show`` of ``plan`` with every secret masked (masking.py is the one place that knows how)."""
    return mask_text(show(mask_plan(plan)), plan_secrets(plan))


def _wrap_flags(words: list[str], indent: str, width: int = 100) -> list[str]:
    """Shell-quoted words wrapped to lines, never splitting a flag from its values."""
    lines: list[str] = []
    line = ""
    for flag, values in split_flags(words):
        item = shell_join([flag, *values] if flag else list(values))
        if line and len(indent) + len(line) + 1 + len(item) > width:
            lines.append(indent + line)
            line = item
        else:
            line = f"{line} {item}" if line else item
    if line:
        lines.append(indent + line)
    return lines


def _step_lines(n: int, step: Step, plan: Plan) -> list[str]:
    where = "head" if step.where == HEAD else step.host
    lines = [f"{n:>2}. [{where}] {step.purpose}"]
    if step.env:
        lines.append("      env: " + " ".join(f"{k}={quote(v)}" for k, v in step.env))
    if isinstance(step, SubmitStep):
        shown = [f"{RUNTIME_ENV_FLAG}<runtime env below>" if w.startswith(RUNTIME_ENV_FLAG) else w
                 for w in step.options]
        lines.append("      $ " + shell_join(shown) + " \\")
        lines.append("          " + shell_join([*plan.train.entry, *plan.train.prefix]) + " \\")
        for group, words in plan.train_groups:
            lines.append(f"        # {group}" + ("" if words else " (empty)"))
            lines.extend(_wrap_flags(list(words), " " * 10))
        return lines
    if step.where == WORKER:
        lines.append(f"      $ ssh {plan.cluster.ssh_user}@{step.host} {quote(step.remote_command)}")
    for command in step.commands if step.where == HEAD else ():
        lines.append(f"      $ {shell_join(command)}")
    for path, content in step.files if isinstance(step, WriteFileStep) else ():
        lines.append(f"      > {path}:")
        lines += [f"          {line}" for line in content.splitlines()]
    return lines


def render_text(plan: Plan, show_secrets: bool = False, ops: Operations | None = None,
                prepare: PreparePlan | None = None) -> str:
    """Grouped, readable plan with the effective settings and any warnings (secrets masked)."""
    if not show_secrets:
        return _masked(plan, lambda p: render_text(p, True, ops, prepare))
    out = ["Launch plan", ""]
    width = max(len(k) for k, _ in plan.settings)
    out += [f"  {k:<{width}}  {v}" for k, v in plan.settings]
    if plan.notes:
        out += ["", "Notes"] + [f"  - {n}" for n in plan.notes]
    if plan.warnings:
        out += ["", "Warnings"] + [f"  ! {w}" for w in plan.warnings]
    if plan.variant_changes:
        out += ["", f"Variant (differences from recipe {plan.recipe_name})"]
        out += [f"  {c}" for c in plan.variant_changes]
    if plan.overrides:
        out += ["", "Overrides (differences from the recipe" + (" and variant" if plan.variant_changes else "") + ")"]
        out += [f"  {c}" for c in plan.overrides]
    if prepare is not None:
        out += ["", *prepare_lines(prepare)]
    out += ["", "Steps"]
    for n, step in enumerate(plan.steps, start=1):
        out += _step_lines(n, step, plan)
    for title, steps in (("If the launch fails (on the hosts where it started Ray)", plan.on_failure),
                         ("On Ctrl-C while the job runs", plan.on_interrupt)):
        if steps:
            out += ["", title]
            for n, step in enumerate(steps, start=1):
                out += _step_lines(n, step, plan)
    out += _operations_lines(plan, ops or build_operations(plan))
    out += ["", f"Runtime env ({len(plan.env_vars)} env_vars, in order)"]
    width = max((len(k) for k, _ in plan.env_vars), default=0)
    out += [f"  {k:<{width}} = {v}" for k, v in plan.env_vars]
    return "\n".join(out) + "\n"


def _op_lines(n: int, step: Step, plan: Plan) -> list[str]:
    where = "head" if step.where == HEAD else step.host
    ssh = f"ssh {plan.cluster.ssh_user}@{step.host} " if step.where == WORKER else ""
    lines = [f"{n:>2}. [{where}] {step.purpose}"]
    if isinstance(step, DiagnoseStep):  # the program by its file name (its text is the word after -c)
        return lines + [f"      $ {ssh}python3 -c <{step.program}> {quote(c[3])}" for c in step.commands]
    if step.where == WORKER:
        return lines + [f"      $ {ssh}{quote(step.remote_command)}"]
    return lines + [f"      $ {shell_join(c)}" for c in step.commands]


def _operations_lines(plan: Plan, ops: Operations) -> list[str]:
    """What runs around the job: the health watch, stopping it, diagnostics, restarts."""
    s = ops.settings
    stall = f"{s.stall_timeout_s:g}s without driver output: stalled" if s.stall_timeout_s else "--stall-timeout off"
    out = ["", f"While the job runs: the health watch, every {s.interval_s:g}s"
               + ("" if s.watch else " (off: --no-watch)"),
           f"  Ray's node table at {ops.node_table}: every node ALIVE; a node DEAD or gone, or without a raylet, "
           f"is lost; one that does not answer within {s.probe_timeout_s:g}s, {s.unreachable_after} times in a row, "
           f"is lost; {stall}"]
    for n, step in enumerate(ops.health, start=1):
        out += _op_lines(n, step, plan)
    out += ["", f"While the job starts (its first {s.startup_scan_s:g}s), every round: Ray workers that cannot start "
                "(a broken environment) stop the job at once, their first error named"]
    for n, step in enumerate(ops.startup, start=1):
        out += _op_lines(n, step, plan)
    out += ["", f"When a node is lost, workers cannot start or the job stalls: stop the job, forced after {s.stop_grace_s:g}s"]
    out += _op_lines(1, ops.stop_job[0], plan) if ops.stop_job else []
    out.append("  then, if the job has not stopped: the launcher's `ray job submit` is killed and the forced "
               f"stop runs on every node (\"If the launch fails\" 1-{len(ops.force_stop)})")
    out += ["", "On Ctrl-C before the job has an id: the forced stop on the hosts where the "
                "launch started Ray or sent a `ray start`: nothing is left half-started"
                + ("; with --max-restarts, on every node whenever Ctrl-C comes (no restart)" if s.max_restarts else "")]
    out += ["", f"Diagnostics, on a failure and by `glm45-launch collect` (at most {s.collect_timeout_s:g}s; "
                "<diagnose.py> is glm45_launch/runtime/programs/diagnose.py)"]
    for n, step in enumerate((*ops.diagnose, ops.job_logs), start=1):
        out += _op_lines(n, step, plan)
    if s.max_restarts:
        out += ["", f"Restarts: up to {s.max_restarts} after a node lost, a stall or a failed job: wait for the "
                    f"lost node (at most {s.host_wait_s:g}s), then Steps 1-{len(plan.steps)} again (the cleanup "
                    f"stops what is left); the trainer resumes from {ops.checkpoint_dir}/{LATEST_ITERATION}"]
    else:
        out += ["", "Restarts: none (--max-restarts 0)"]
    return out


def render_bash(plan: Plan, show_secrets: bool = False) -> str:
    """A standalone script that runs the same argv as the plan (and as the bash recipe);
    secrets are masked unless ``show_secrets``."""
    if not show_secrets:
        return _masked(plan, lambda p: render_bash(p, show_secrets=True))
    out = [
        "#!/bin/bash",
        "# Generated by `glm45-launch plan --format bash`: the launch plan as a script.",
        "# Every word is quoted, so paths with spaces stay one word (unlike the bash recipe).",
        "set -u",
    ]
    holding = False
    for step in plan.steps:
        out += ["", comment(step.purpose)]
        if isinstance(step, JoinStep):
            out.append("wait")
            continue
        if isinstance(step, NetcheckStep):  # the launcher's own check, no command of the recipe
            out.append("# (not in a script: `glm45-launch netcheck` runs the network check)")
            continue
        if isinstance(step, HoldStep):
            if not holding:  # the held sessions read a FIFO whose only writer is fd 9: closing it ends them
                out.append('hold_fifo=$(mktemp -u) && mkfifo "$hold_fifo" && exec 9<>"$hold_fifo" || exit 1')
                holding = True
            out.append(f"ssh {quote(plan.cluster.ssh_user + '@' + step.host)} {quote(step.remote_command)}"
                       ' < "$hold_fifo" 9>&- &')  # 9>&-: the session must not hold the writer itself
            continue
        if step.cwd:
            out.append(f"cd {quote(step.cwd)} || exit 1")
        out += [f"export {k}={quote(v)}" for k, v in step.env]
        for path, content in step.files if isinstance(step, WriteFileStep) else ():
            end = "GLM45_EOF"
            while end in content:
                end += "_"
            out += [f"mkdir -p {quote(os.path.dirname(path) or '.')}", f"cat > {quote(path)} <<'{end}'",
                    content.rstrip("\n"), end]
        if step.where == WORKER:
            out.append(f"ssh {quote(plan.cluster.ssh_user + '@' + step.host)} {quote(step.remote_command)} &")
            continue
        for command in step.commands:
            line = shell_join(command)
            if step.ignore_errors:
                line += " || true"
            out.append(line)
    if holding:
        out += ["", comment("the job has ended: release the held worker sessions"),
                'exec 9>&- && rm -f "$hold_fifo"']
    return "\n".join(out) + "\n"
