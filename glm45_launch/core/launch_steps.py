"""The steps that bring a cluster up and take it down: cleanup, head start, worker starts,
held sessions, teardown, stopping the job, ``down`` (pure; ``plan.build_plan`` orders them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from glm45_launch.core.flags import Argv
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.steps import (
    HEAD,
    JOB_ID,
    WORKER,
    CleanupStep,
    HeadStartStep,
    HoldStep,
    Step,
    StopJobStep,
    StopStep,
    WorkerStartStep,
)
from glm45_launch.recipes import Recipe, fill, fill_all

if TYPE_CHECKING:
    from glm45_launch.core.plan import ClusterFacts, LaunchSpec

RAY_STOP: Argv = ("ray", "stop", "--force")
HOLD: Argv = ("cat",)  # blocks on the ssh session's stdin until the launcher closes the session
# What stops Ray in a cleanup (dropped with --external-ray): `ray stop`, and kills of Ray's
# daemons or of the Python processes Ray's dashboard, agents and workers run as.
_RAY_NAMES = frozenset({"ray", "raylet", "gcs_server", "python", "python3"})


def stops_ray(argv: Sequence[str]) -> bool:
    """True for a cleanup command that stops Ray (``ray stop``, ``pkill -9 ray``, ``pkill -9 python``):
    what ``--external-ray`` leaves out, since the cluster is not this launcher's."""
    if tuple(argv[:2]) == ("ray", "stop"):
        return True
    return bool(argv) and argv[0] in ("pkill", "killall") and argv[-1] in _RAY_NAMES


def launch_steps(
    spec: LaunchSpec, recipe: Recipe, cluster: ClusterFacts, values: dict[str, str],
    head_env: tuple[tuple[str, str], ...], exports: tuple[tuple[str, str], ...],
) -> list[Step]:
    """Cleanup, head start and worker starts (only the cleanup's non-Ray kills with --external-ray)."""
    head = cluster.head
    steps: list[Step] = []
    cleanup = [c for c in recipe.head_cleanup if not (spec.external_ray and stops_ray(c))]
    if spec.cleanup and cleanup:
        steps.append(CleanupStep(
            where=HEAD, host=head, commands=tuple(cleanup), ignore_errors=True, spare_launcher=True,
            guard_ports=() if spec.external_ray else cluster.head_ports,
            purpose="stop leftovers of a previous run (errors ignored; the kills spare the launcher and its "
                    "ancestors)" + ("; Ray itself is left running (--external-ray)" if spec.external_ray else ""),
        ))
    if spec.external_ray:
        return steps
    head_start = fill_all(recipe.head_start, values)
    if exports:
        head_start = ("env", *(f"{k}={v}" for k, v in exports), *head_start)
    steps.append(HeadStartStep(
        where=HEAD, host=head, commands=(head_start,), cwd=spec.workdir,
        env=head_env + tuple((k, fill(v, values)) for k, v in recipe.head_start_env),
        free_ports=cluster.head_ports, ready_port=cluster.ray_port if spec.overlap else None,
        purpose=f"start the Ray head in {spec.workdir} (the job's cwd)",
    ))
    ray_env = exports + tuple((k, fill(v, values)) for k, v in recipe.worker_env)
    for host in cluster.workers:
        host_values = {**values, "host": host}
        commands = [fill_all(c, host_values) for c in recipe.worker_commands]
        if not spec.cleanup:
            commands = [c for c in commands if c[:2] == ("ray", "start")]
        if ray_env:
            commands = [("env", *(f"{k}={v}" for k, v in ray_env), *c) if c[:2] == ("ray", "start") else c
                        for c in commands]
        # The " ; " inside the remote command ignores the cleanup's errors, as in the recipe;
        # the step's own status is `ray start`'s, and a failure stops the launch (never silent).
        steps.append(WorkerStartStep(
            where=WORKER, host=host, commands=tuple(commands), purpose=f"join {host} to the cluster at {head}",
        ))
    return steps


def hold_steps(workers: Sequence[str]) -> list[Step]:
    """``--hold-workers``: one held ssh session per worker, from the join until the job ends."""
    return [HoldStep(where=WORKER, host=h, commands=(HOLD,), purpose=f"hold an ssh session to {h} open until the "
                     "job ends") for h in workers]


def teardown_steps(cluster: ClusterFacts) -> tuple[Step, ...]:
    """After a failed launch: ``ray stop --force`` on the head and every worker (the executor
    runs those of the hosts where it started Ray)."""
    return (StopStep(where=HEAD, host=cluster.head, commands=(RAY_STOP,), purpose="stop Ray on the head"),
            *(StopStep(where=WORKER, host=h, commands=(RAY_STOP,), purpose=f"stop Ray on {h}")
              for h in cluster.workers))


def stop_job(cluster: ClusterFacts) -> Step:
    return StopJobStep(
        where=HEAD, host=cluster.head, commands=(("ray", "job", "stop", f"--address={cluster.job_address}", JOB_ID),),
        purpose="stop the job (Ctrl-C while it runs)",
    )


def build_down_plan(hostfile: Hostfile, head: str | None = None, here: frozenset[str] = frozenset(),
                    extra: Sequence[str] = ()) -> list[Step]:
    """Steps that stop Ray everywhere (pure): every hostfile host (and ``extra`` ones, e.g. hosts
    the last run started that the hostfile no longer lists) over SSH, except the hosts ``here``
    (this machine: the head, usually), which stop here; the head too when it is this machine and
    not in the hostfile."""
    hosts = list(dict.fromkeys([*hostfile.names, *extra]))
    steps: list[Step] = [StopStep(where=HEAD if h in here else WORKER, host=h, commands=(RAY_STOP,),
                                  purpose=f"stop Ray on {'the head' if h == head else h}") for h in hosts]
    if head and head in here and head not in hosts:
        steps.insert(0, StopStep(where=HEAD, host=head, commands=(RAY_STOP,), purpose="stop Ray on the head"))
    return steps
