"""Host preflight: is every node ready for the plan, before anything is started?

One self-contained Python probe (``programs/probe.py``) runs on every host at once, over SSH
as ``python3 -c PROGRAM CONFIG`` (quoted by ``quoting.py``), or here for the head when it is
this machine or not in the hostfile (the bash recipe never needs SSH from the head to
itself, so neither does preflight). It imports nothing heavy (versions come from ``importlib.metadata`` and
``ray --version``) and prints one JSON line; everything judged from it is pure
(:func:`judge`, ``host_checks.py``), so the rules are unit-tested without SSH.

Per host: SSH, versions (python3, the ``ray`` first on PATH, torch, sglang, megatron-core)
against the head's, GPUs and NVLink (``nvidia-smi``), the checkpoint and data paths of the
train args, the socket interface, the ``${VAR}``s of the runtime env, free space in /tmp,
``import ray, torch, FRAMEWORK`` with the job's runtime env applied, the processes that the
kill commands before ``ray start`` would hit but Ray did not start, ``rsync`` (with
``needs_rsync``), and which machine it is (two hostfile lines that reach one machine fail).
On the head also: the Ray and dashboard ports (and, when held, whether the holder is Ray's:
``portowner.py``, bundled with the probe), the entry script, and (optionally) the
megatron-core/sglang checks of ``validate_libs`` with the head's installed versions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from glm45_launch.checks.host_checks import (
    PACKAGES,
    RAY_DAEMONS,
    RAY_PYTHON_MARKERS,
    entry_path,
    evaluate,
    identity_checks,
    kill_queries,
    plan_paths,
)
from glm45_launch.checks.preflight_report import (
    FAIL,
    OK,
    Check,
    HostReport,
    PreflightOptions,
    PreflightReport,
)
from glm45_launch.checks.programs import imports_program, probe_program
from glm45_launch.core.marked import last_marked_json
from glm45_launch.core.plan import Plan
from glm45_launch.core.runtime_env import env_refs, ray_env_order
from glm45_launch.core.steps import HEAD, WORKER, PreflightStep

MARKER = "GLM45-PREFLIGHT "


def start_env(plan: Plan, is_head: bool) -> list[tuple[str, str]]:
    """What the start step on such a host exports to ``ray start`` (its workers inherit it)."""
    step = plan.step("head-start") if is_head else (plan.worker_steps or [None])[0]
    return list(step.env) if step is not None else []


def cleanup_commands(plan: Plan, is_head: bool) -> list[tuple[str, ...]]:
    """The kill commands the plan runs on such a host before ``ray start`` (the head's cleanup,
    a worker's start command)."""
    step = plan.step("cleanup") if is_head else (plan.worker_steps or [None])[0]
    return [tuple(argv) for argv in (step.commands if step is not None else ())]


def probe_config(plan: Plan, is_head: bool, opts: PreflightOptions) -> dict[str, Any]:
    """The probe's argv[1]: what one host must report (pure)."""
    paths = [p for spec in plan_paths(plan) for p in spec.probe_paths]
    if is_head:
        paths.append(entry_path(plan))
    env = dict(plan.env_vars)
    return {
        "imports": {"base_env": start_env(plan, is_head), "env_vars": [[k, env[k]] for k in ray_env_order(plan.env_vars)],
                    "optional": ["torch", plan.spec.framework], "program": imports_program(),
                    "all": opts.import_all},
        "kills": kill_queries(cleanup_commands(plan, is_head)),
        "ray": {"daemons": list(RAY_DAEMONS), "markers": list(RAY_PYTHON_MARKERS)},
        "rsync": opts.needs_rsync,
        "packages": list(PACKAGES),
        "paths": list(dict.fromkeys(paths)),
        "env": env_refs(plan.env_vars),
        "ifnames": [plan.spec.socket_ifname] if plan.spec.socket_ifname else [],
        "tmp_dir": opts.tmp_dir,
        "ports": [[h, p] for h, p, _ in plan.cluster.head_ports] if is_head else [],
        "cmd_timeout": max(5, int(opts.timeout_s - 10) // 2),
        "marker": MARKER,
    }


def probe_argv(plan: Plan, is_head: bool, opts: PreflightOptions) -> list[str]:
    return ["python3", "-c", probe_program(), json.dumps(probe_config(plan, is_head, opts))]


def parse_probe_output(lines: Sequence[str]) -> dict[str, Any] | None:
    """The probe's JSON from its output (the last marker line wins; shell noise is ignored)."""
    return last_marked_json(lines, MARKER)


def head_probed_here(plan: Plan, head_is_local: bool) -> bool:
    """The head is probed on this machine, not over SSH, when it is this machine (whether or
    not the hostfile lists it: the recipe never SSHes from the head to itself) or when the
    hostfile does not list it (the launcher runs on the head)."""
    return head_is_local or plan.head not in plan.spec.hostfile.names


def preflight_steps(plan: Plan, opts: PreflightOptions, head_is_local: bool) -> list[PreflightStep]:
    """The probe on every host (pure): the head here when :func:`head_probed_here`, every
    other hostfile host over SSH."""
    head = plan.head
    here = head_probed_here(plan, head_is_local)
    argv = {is_head: tuple(probe_argv(plan, is_head, opts)) for is_head in (True, False)}  # once, not per host
    steps = [PreflightStep(where=HEAD, host=head, commands=(argv[True],),
                           purpose="probe the head here")] if here else []
    for host in dict.fromkeys(plan.spec.hostfile.names):
        if host == head and here:
            continue
        steps.append(PreflightStep(where=WORKER, host=host, commands=(argv[host == head],),
                                   purpose=f"probe {host} over SSH"))
    return steps


def probe_failure(host: str, code: int | None, tail: Sequence[str]) -> Check:
    """Why a probe gave no report: python3 missing, or whatever it printed instead."""
    text = " | ".join(ln for ln in tail[-3:] if ln.strip())[-300:] or "no output"
    if code == 127:
        return Check("probe", FAIL, f"python3 not found on PATH of {host} (the probe and train.py need it): {text}")
    return Check("probe", FAIL, f"probe exited {code} without a report: {text}")


class ProbeOutcome(Protocol):
    """What running a probe gave (``runtime.results.CommandResult`` has these)."""

    exit_code: int | None
    error: str | None
    output_tail: list[str]


def judge(
    plan: Plan, opts: PreflightOptions, steps: Sequence[PreflightStep], results: Mapping[str, ProbeOutcome],
    lib_check: Check | None, ssh_user: str, duration_s: float,
) -> PreflightReport:
    """Every host's checks from its probe's result (pure): ssh reachability, the probe's own
    failure, then :func:`evaluate` against the head's facts (or the first host that reported)."""
    head = plan.head
    listed = list(dict.fromkeys(plan.spec.hostfile.names))
    via = {s.host: "local" if s.where == HEAD else "ssh" for s in steps}
    facts: dict[str, dict[str, Any] | None] = {}
    errors: dict[str, Check | None] = {}
    for step in steps:
        res = results[step.host]
        facts[step.host], errors[step.host] = None, None
        if res.exit_code is None and via[step.host] == "ssh":
            errors[step.host] = Check("ssh", FAIL, res.error or "no result")
        elif res.exit_code is None:
            errors[step.host] = (probe_failure(step.host, 127, [res.error or "python3: not found"])
                                 if res.error and res.error.startswith("cannot run") else
                                 Check("probe", FAIL, res.error or "no result"))
        elif res.error:  # a timeout fired (the remote `timeout`: exit 124)
            errors[step.host] = Check("probe", FAIL, res.error)
        else:
            facts[step.host] = parse_probe_output(res.output_tail)
            if facts[step.host] is None:
                errors[step.host] = probe_failure(step.host, res.exit_code, res.output_tail)
    ref = head if facts.get(head) else next((h for h in via if facts.get(h)), None)
    hostfile = plan.spec.hostfile
    where = {h.name: f"{hostfile.path}:{h.line}" for h in hostfile.hosts}
    where.setdefault(head, "--head")
    same = identity_checks([head, *[h for h in listed if h != head]], facts, where)
    paths = plan_paths(plan)  # the same on every host
    reports = []
    for host in [head, *[h for h in listed if h != head]]:
        is_head = host == head
        report = HostReport(host, "head" if is_head else "worker", via[host])
        error = errors[host]
        if via[host] == "ssh":
            report.checks.append(error if error and error.name == "ssh" else Check("ssh", OK, f"{ssh_user}@{host}"))
        else:
            why = "is this machine" if head in listed else "is not in the hostfile"
            report.checks.append(Check("ssh", OK, f"not needed: the head {why} (probed here)"))
        if host in same:
            report.checks.append(same[host])
        if error and error.name != "ssh":
            report.checks.append(error)
        found = facts[host]
        if found is not None:
            report.checks += evaluate(plan, host, found, is_head, via[host], opts, ref,
                                      facts[ref] if ref else None, paths=paths)
        if is_head and lib_check is not None:
            report.checks.append(lib_check)
        reports.append(report)
    return PreflightReport(reports, duration_s)
