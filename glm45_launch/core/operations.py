"""What runs around the job, as steps made from the plan's facts: the health watch, stopping
the job, diagnostics, re-attaching and restarts (pure).

``plan.steps`` bring the cluster up and submit the job; these are the rest of what ``up``,
``collect``, ``logs``, ``stop`` and ``status`` run on the hosts, so ``plan`` can show them:

* health checks (``pgrep -x raylet`` on every node, the head here, the others over SSH) and
  Ray's node table, while the job runs;
* stopping the job: ``plan.on_interrupt`` (``ray job stop``), then, after a grace period,
  ``plan.on_failure`` on every node (``ray stop --force``);
* diagnostics on every node (a bounded program: Ray log tails, ``dmesg``, ``nvidia-smi``)
  and the job's driver log (``ray job logs``);
* restarts: ``plan.steps`` again; the trainer resumes through ``--load``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from glm45_launch.core.plan import Plan
from glm45_launch.core.steps import (
    HEAD,
    JOB_ID,
    WORKER,
    DiagnoseStep,
    HealthCheckStep,
    JobLogsStep,
    Step,
    StopJobStep,
)
from glm45_launch.errors import LaunchError

RAYLET_CHECK = ("pgrep", "-x", "raylet")  # exit 0: a raylet runs; 1: none does
# A worker's `ray start` still running (Ctrl-C during the start closed its session, not the command):
# the bracket keeps the pattern from matching the shell that runs this very pkill.
DIAG_MARKER = "GLM45-DIAG "  # the diagnostics program's summary line starts with this
LATEST_ITERATION = "latest_checkpointed_iteration.txt"  # Megatron's tracker file in --load


@dataclass(frozen=True)
class WatchSettings:
    """How ``up`` watches the job, stops it, collects evidence and restarts (its options)."""

    watch: bool = True
    interval_s: float = 10.0  # between two rounds of health checks (and node-table reads)
    probe_timeout_s: float = 10.0  # a node that does not answer a check within this is unreachable
    unreachable_after: int = 2  # consecutive unreachable checks before a node counts as lost
    stall_timeout_s: float | None = None  # no driver output for this long: stalled (None: off)
    stop_grace_s: float = 30.0  # after `ray job stop`, before the forced stop
    max_restarts: int = 0
    host_wait_s: float = 600.0  # how long a restart waits for a lost node to come back
    collect_timeout_s: float = 60.0  # per node, for the diagnostics
    collect: bool = True  # collect diagnostics after a failed job
    startup_scan_s: float = 600.0  # the job's first seconds: every round, look for Ray workers that cannot start

    def problems(self) -> list[str]:
        out = []
        for name in ("interval_s", "probe_timeout_s", "stop_grace_s", "host_wait_s", "collect_timeout_s",
                     "startup_scan_s"):
            if getattr(self, name) <= 0:
                out.append(f"{name} must be > 0")
        if self.stall_timeout_s is not None and self.stall_timeout_s <= 0:
            out.append("stall_timeout_s must be > 0")
        if self.max_restarts < 0 or self.unreachable_after < 1:
            out.append("max_restarts must be >= 0 and unreachable_after >= 1")
        return out


@dataclass(frozen=True)
class Operations:
    """The steps around one plan's job, and the settings they run with."""

    settings: WatchSettings
    health: tuple[HealthCheckStep, ...]  # one per node, the head first
    node_table: str  # the job server address Ray's node table is read from
    stop_job: tuple[Step, ...]  # graceful: plan.on_interrupt
    force_stop: tuple[Step, ...]  # after the grace period: ray stop --force on every node
    diagnose: tuple[DiagnoseStep, ...]  # one per node, the head first
    startup: tuple[DiagnoseStep, ...]  # the start-up scan, one per node: Ray workers that failed to start
    job_logs: JobLogsStep
    checkpoint_dir: str | None  # where the trainer resumes from (the train args' --load)

    def health_for(self, hosts: set[str] | list[str]) -> list[HealthCheckStep]:
        return [s for s in self.health if s.host in hosts]

    def to_json(self, ssh_user: str) -> dict[str, Any]:
        s = self.settings
        return {
            "watch": {"enabled": s.watch, "interval_s": s.interval_s, "probe_timeout_s": s.probe_timeout_s,
                      "unreachable_after": s.unreachable_after, "stall_timeout_s": s.stall_timeout_s,
                      "node_table": self.node_table, "steps": [x.to_json(ssh_user) for x in self.health]},
            "stop": {"grace_s": s.stop_grace_s, "graceful": [x.to_json(ssh_user) for x in self.stop_job],
                     "forced": [x.to_json(ssh_user) for x in self.force_stop]},
            "startup_scan": {"seconds": s.startup_scan_s, "steps": [x.to_json(ssh_user) for x in self.startup]},
            "collect": {"timeout_s": s.collect_timeout_s,
                        "steps": [x.to_json(ssh_user) for x in (*self.diagnose, self.job_logs)]},
            "restart": {"max_restarts": s.max_restarts, "host_wait_s": s.host_wait_s,
                        "checkpoint_dir": self.checkpoint_dir,
                        "resume_from": f"{self.checkpoint_dir}/{LATEST_ITERATION}" if self.checkpoint_dir else None},
        }


def checkpoint_dir(plan: Plan) -> str | None:
    """Where the trainer resumes from: the train args' ``--load`` (``--checkpoint-dir`` sets it)."""
    return plan.job.load or None


def diagnose_config(plan: Plan, settings: WatchSettings) -> dict[str, Any]:
    """The diagnostics program's argv[1] (bounded: lines, files, bytes, seconds)."""
    return {
        "ray_logs": f"{plan.cluster.ray_temp_dir}/session_latest/logs",
        "lines": 200,  # of each Ray log
        "worker_files": 5,  # the newest non-empty worker-*.err files
        "dmesg_lines": 300,
        "max_bytes": 512 * 1024,  # the whole report of one node
        "cmd_timeout": max(2, min(15, int(settings.collect_timeout_s // 3))),
        "marker": DIAG_MARKER,
    }


def job_logs_step(head: str, address: str) -> JobLogsStep:
    """``ray job logs --address=URL JOB`` on the head (``logs``, ``attach``, diagnostics)."""
    return JobLogsStep(where=HEAD, host=head, commands=(("ray", "job", "logs", f"--address={address}", JOB_ID),),
                       purpose="the job's driver log (`glm45-launch logs -f` and `attach` add --follow)")


def stop_job_step(head: str, address: str) -> StopJobStep:
    """``ray job stop`` as ``glm45-launch stop`` runs it (the same command as plan.on_interrupt)."""
    return StopJobStep(where=HEAD, host=head, commands=(("ray", "job", "stop", f"--address={address}", JOB_ID),),
                       purpose="stop the job gracefully (SIGTERM, then Ray's SIGKILL)")


def build_operations(plan: Plan, settings: WatchSettings | None = None, diagnose_program: str = "") -> Operations:
    """The steps around ``plan``'s job; ``diagnose_program`` is the text of the diagnostics
    program (the runtime reads the file; plan output shows it by name). Settings that cannot
    watch or restart this plan's job (:func:`watch_problem`) are refused here, the one check
    that ``plan``, ``up --dry-run`` and ``up`` share."""
    settings = settings or WatchSettings()
    problem = watch_problem(plan, settings)
    if problem:
        raise LaunchError(problem)
    c = plan.cluster
    health = tuple(
        HealthCheckStep(where=HEAD if h == c.head else WORKER, host=h, commands=(RAYLET_CHECK,),
                        purpose=f"is the raylet running on {'the head' if h == c.head else h}")
        for h in c.nodes
    )
    config = json.dumps(diagnose_config(plan, settings), separators=(",", ":"))
    diagnose = tuple(
        DiagnoseStep(where=HEAD if h == c.head else WORKER, host=h,
                     commands=(("python3", "-c", diagnose_program, config),),
                     purpose=f"evidence from {'the head' if h == c.head else h}: Ray log tails, dmesg, nvidia-smi")
        for h in c.nodes
    )
    scan = json.dumps({"mode": "startup", "ray_logs": f"{c.ray_temp_dir}/session_latest/logs", "lines": 400,
                       "marker": DIAG_MARKER}, separators=(",", ":"))
    startup = tuple(
        DiagnoseStep(where=HEAD if h == c.head else WORKER, host=h, commands=(("python3", "-c", diagnose_program, scan),),
                     purpose=f"Ray workers on {'the head' if h == c.head else h} that failed to start (a traceback "
                             "through Ray's default_worker.py in raylet.err or worker-*.err)")
        for h in c.nodes
    )
    return Operations(
        settings=settings, health=health, node_table=c.job_address,
        stop_job=plan.on_interrupt or (stop_job_step(c.head, c.job_address),), force_stop=plan.on_failure,
        diagnose=diagnose, startup=startup, job_logs=job_logs_step(c.head, c.job_address), checkpoint_dir=checkpoint_dir(plan),
    )


def watch_problem(plan: Plan, settings: WatchSettings) -> str | None:
    """Why ``settings`` cannot watch and restart ``plan``'s job as asked (None: they can)."""
    return restart_problem(plan, settings) or next(iter(settings.problems()), None)


def restart_problem(plan: Plan, settings: WatchSettings) -> str | None:
    """Why ``settings`` cannot restart ``plan``'s job (None: it can)."""
    if settings.max_restarts == 0:
        return None
    if plan.spec.no_wait:
        return "--max-restarts needs to wait for the job (drop --no-wait)"
    if checkpoint_dir(plan) is None:
        return ("--max-restarts: the train args have no --load, so a restart would start again from --ref-load: "
                "give --checkpoint-dir DIR (adds --load/--save DIR)")
    return None
