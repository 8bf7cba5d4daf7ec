"""The cluster a plan brings up, and the steps that bring it up and take it down (pure).

The last stage of a plan (``builder.build_plan``): from the recipe the variant and overrides
shaped, the cluster's facts (:func:`cluster_facts`), then its steps in order: cleanup, head
start, worker starts, the join, the network check, held sessions, the job's files, the submit
(:func:`launch_steps`); and what stops it: teardown, stopping the job, ``down``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from glm45_launch.core.flags import flag_value
from glm45_launch.core.hostfile import Hostfile
from glm45_launch.core.netcheck import NetcheckSettings, netcheck_bound
from glm45_launch.core.plan import DEFAULT_RAY_TEMP, ClusterFacts, LaunchSpec, TrainArgs
from glm45_launch.core.runtime_env import runtime_env_json
from glm45_launch.core.steps import (
    HEAD,
    JOB_ID,
    RUN_DIR,
    WORKER,
    CleanupStep,
    HeadStartStep,
    HoldStep,
    JoinStep,
    NetcheckStep,
    Step,
    StopJobStep,
    StopStep,
    SubmitStep,
    WorkerStartStep,
    WriteFileStep,
)
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import Argv, Recipe, fill, fill_all

RAY_STOP: Argv = ("ray", "stop", "--force")
HOLD: Argv = ("cat",)  # blocks on the ssh session's stdin until the launcher closes the session
# What stops Ray in a cleanup (dropped with --external-ray): `ray stop`, and kills of Ray's
# daemons or of the Python processes Ray's dashboard, agents and workers run as.
_RAY_NAMES = frozenset({"ray", "raylet", "gcs_server", "python", "python3"})
WILDCARDS = ("0.0.0.0", "::")  # --dashboard-host values that bind every interface
_LOOPBACK = ("127.0.0.1", "localhost")  # where the recipe's `ray job submit` finds the dashboard
_JOIN_NOTE = {  # what the profile's own launcher does instead
    "bash": "(the bash recipe waits for the ssh commands only)",
    "python": "(upstream expects them in the cluster already)",
    "python-8node": "(upstream's ssh fan-out waits for the ssh commands only)",
    "air-p2p": "(the script's head polls Ray's GPU count the same way)",
}


def url_host(host: str) -> str:
    """``host`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def _port(values: Mapping[str, str], key: str) -> int:
    try:
        return int(values[key])
    except (KeyError, ValueError):
        raise LaunchError(f"recipe [defaults] {key}: {values.get(key)!r} is not a port") from None


def _at_job_host(word: str, job_host: str) -> str:
    """A submit word with the job server's address where the recipe writes 127.0.0.1."""
    if job_host == "127.0.0.1" or not word.startswith("--address="):
        return word
    return word.replace("//127.0.0.1:", f"//{url_host(job_host)}:", 1)


def cluster_facts(spec: LaunchSpec, recipe: Recipe, values: Mapping[str, str], workers: tuple[str, ...],
                  gpus_per_node: int) -> ClusterFacts:
    """The Ray cluster ``recipe`` brings up with these placeholder ``values``: where the launcher
    reaches the job server is loopback unless the dashboard binds one address."""
    dashboard = values["dashboard_host"]
    dashboard_port = _port(values, "dashboard_port")
    job_host = "127.0.0.1" if dashboard in WILDCARDS + _LOOPBACK else dashboard
    address = next((_at_job_host(w, job_host).removeprefix("--address=") for w in fill_all(recipe.submit, values)
                    if w.startswith("--address=")), f"http://{url_host(job_host)}:{dashboard_port}")
    temp_dir = None if spec.external_ray else flag_value(fill_all(recipe.head_start, values), "--temp-dir")
    return ClusterFacts(
        head=values["head"], workers=workers, gpus_per_node=gpus_per_node, ray_port=_port(values, "ray_port"),
        dashboard_host=dashboard, dashboard_port=dashboard_port, job_host=job_host, job_address=address,
        ssh_user=spec.ssh_user, ray_temp_dir=temp_dir or DEFAULT_RAY_TEMP,
    )


def stops_ray(argv: Sequence[str]) -> bool:
    """True for a cleanup command that stops Ray (``ray stop``, ``pkill -9 ray``, ``pkill -9 python``):
    what ``--external-ray`` leaves out, since the cluster is not this launcher's."""
    if tuple(argv[:2]) == ("ray", "stop"):
        return True
    return bool(argv) and argv[0] in ("pkill", "killall") and argv[-1] in _RAY_NAMES


def launch_steps(
    spec: LaunchSpec, recipe: Recipe, cluster: ClusterFacts, values: Mapping[str, str], train: TrainArgs,
    env_vars: Sequence[tuple[str, str]], exports: tuple[tuple[str, str], ...], files: Sequence[tuple[str, str]],
) -> tuple[Step, ...]:
    """Every step of the launch, in order: the cluster up (:func:`cluster_steps`), the join, the
    held sessions, the files the job reads (written on the head), the submit."""
    head = cluster.head
    head_env = tuple((k, fill(v, values)) for k, v in recipe.head_exports)
    steps = cluster_steps(spec, recipe, cluster, values, head_env, exports)
    steps.append(JoinStep(
        where=HEAD, host=head, hosts=cluster.nodes, gpus=cluster.total_gpus, address=cluster.job_address,
        purpose=f"wait until {len(cluster.nodes)} node(s) and {cluster.total_gpus} GPUs have joined "
        + ("(the external cluster)" if spec.external_ray else _JOIN_NOTE.get(spec.variant.profile, "")),
    ))
    if spec.netcheck is not None:
        steps.append(netcheck_step(spec.netcheck, cluster, env_vars))
    if spec.hold_workers:
        steps += hold_steps(cluster.workers)
    for path, content in files:  # e.g. --mis's YAML; written on the head before the job starts
        steps.append(WriteFileStep(
            where=HEAD, host=head, files=((fill(path, values), content),),
            purpose=f"write {fill(path, values)} (the job reads it)",
        ))
    submit = tuple(_at_job_host(w, cluster.job_host)
                   for w in fill_all(recipe.submit, {**values, "runtime_env_json": runtime_env_json(env_vars)}))
    if spec.no_wait:
        cut = submit.index("submit") + 1
        submit = submit[:cut] + ("--no-wait",) + submit[cut:]
    steps.append(SubmitStep(
        where=HEAD, host=head, commands=(submit + train.entrypoint,), options=submit,
        env=head_env + tuple((k, fill(v, values)) for k, v in recipe.submit_env),
        cwd=spec.workdir, address=cluster.job_address, no_wait=spec.no_wait,
        purpose=f"submit `python3 {spec.entry}` to the cluster through the head's job server",
    ))
    return tuple(steps)


NETCHECK_DRIVER: Argv = ("python3", "-m", "glm45_launch.runtime.programs.netcheck_driver")


def netcheck_step(settings: NetcheckSettings, cluster: ClusterFacts, env_vars: Sequence[tuple[str, str]]) -> Step:
    """The network check on the head, in the job's runtime env (``env_vars``, their ``${VAR}``s
    for Ray to expand on each node); bounded: every phase ends within the settings' timeout."""
    config = {"address": f"{url_host(cluster.head)}:{cluster.ray_port}", "head": cluster.head,
              "hosts": list(cluster.nodes), "gpus_per_node": cluster.gpus_per_node, "env_vars": dict(env_vars),
              "settings": settings.to_json()}
    config_path, out_path = f"{RUN_DIR}/netcheck/config.json", f"{RUN_DIR}/netcheck/netcheck.json"
    return NetcheckStep(
        where=HEAD, host=cluster.head, config=json.dumps(config, indent=1), config_path=config_path,
        out_path=out_path, timeout_s=netcheck_bound(settings, len(cluster.nodes)),
        commands=((*NETCHECK_DRIVER, "--config", config_path, "--out", out_path),),
        purpose=f"check the network the job will use: interfaces, all-reduce per node and over the cluster "
                f"({settings.backend}; pairs when one fails or is slow), each phase within {settings.timeout_s:g}s",
    )


def cluster_steps(
    spec: LaunchSpec, recipe: Recipe, cluster: ClusterFacts, values: Mapping[str, str],
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


KILL_RAY_START = ("pkill", "-9", "-f", "ray [s]tart")  # a `ray start` still running (its own argv spared)


def teardown_steps(cluster: ClusterFacts) -> tuple[Step, ...]:
    """The forced stop, after a failed launch, a fault or a second Ctrl-C: ``ray stop --force``
    on the head and every worker, a worker first ending a ``ray start`` still running (the one
    stop path runs those of the hosts where Ray was started)."""
    return (StopStep(where=HEAD, host=cluster.head, commands=(RAY_STOP,), purpose="stop Ray on the head"),
            *(StopStep(where=WORKER, host=h, commands=(KILL_RAY_START, RAY_STOP),
                       purpose=f"end a `ray start` still running, then stop Ray on {h}")
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
