"""What a plan tells its reader: the settings it shows, and its notes and warnings (pure prose).

Written from the plan's facts once they are resolved (``builder.build_plan``), so the builder
carries no prose. The profile's and the variant's own notes come from their stages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from glm45_launch.core.flags import flag_value
from glm45_launch.core.job_facts import JobFacts
from glm45_launch.core.launch_steps import WILDCARDS, url_host
from glm45_launch.core.plan import ClusterFacts, LaunchSpec, TrainArgs
from glm45_launch.core.profiles import PYTHON_PROFILES
from glm45_launch.recipes import ModelSpec

Setting = tuple[str, str]


def plan_settings(spec: LaunchSpec, cluster: ClusterFacts, train: TrainArgs, recipe_name: str, model: ModelSpec,
                  stage_settings: Sequence[Setting], values: Mapping[str, str]) -> tuple[Setting, ...]:
    """The effective settings, as ``plan`` lists them (display only: code reads the typed facts)."""
    hosts = spec.hostfile.hosts
    actor_nodes = flag_value(train.argv, "--actor-num-nodes")  # as written (too few: rules.check_plan says so)
    settings: tuple[Setting, ...] = (
        ("recipe", recipe_name),
        ("model", model.name),
        ("framework", spec.framework),
        ("hostfile", f"{spec.hostfile.path} ({len(hosts)} host(s))"),
        ("head", cluster.head + ("" if len(cluster.workers) < len(hosts) else " (not in the hostfile)")),
        ("nodes", str(len(cluster.nodes))),
        ("GPUs per node", str(cluster.gpus_per_node)),
        ("actor nodes", "not given" if actor_nodes is None else actor_nodes),
        ("base dir", spec.base_dir or "not given (the profile's own --model-dir, --data-dir, --output-dir)"),
        ("workdir", spec.workdir),
        ("ssh user", spec.ssh_user),
        ("dashboard", f"{cluster.dashboard_host}:{cluster.dashboard_port}"),
        ("ray port", str(cluster.ray_port)),
        ("cleanup", "yes" if spec.cleanup else "no (--no-cleanup)"),
    )
    settings += (("ray cluster", "external (--external-ray)"),) * spec.external_ray + tuple(stage_settings)
    if spec.variant.profile in PYTHON_PROFILES:
        settings += (("model dir", values["model_dir"]), ("data dir", values["data_dir"]))
    if spec.variant.profile == "python":
        settings += (("run", f"{values['output_dir']}/{values['run_id']}"),)
    elif spec.variant.profile == "python-8node":
        settings += (("output dir", values["output_dir"]), ("run id", values["run_id"]))
    return settings


def plan_notes(spec: LaunchSpec, cluster: ClusterFacts, job: JobFacts, refs: Sequence[str],
               exports: Sequence[tuple[str, str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The plan's notes and warnings: its checkpoints, runtime env, hosts, dashboard and job
    server, and every deviation from the bash recipe an option asked for. ``refs``: the runtime
    env's ``${VAR}``s; ``exports``: what ``--export-env`` exports."""
    notes = [_checkpoint_note(spec, job)]
    if spec.resolve_env:
        notes.append("--resolve-env: the runtime env holds values, not ${VAR}s (differs from the bash recipe)")
    elif refs:
        notes.append("Ray expands " + ", ".join(f"${{{r}}}" for r in refs) + " in the runtime env from each node's "
                     "own environment (Ray 2.60 makes an unset one empty; older Ray left it literal)")
    if spec.export_env:
        notes.append("--export-env: ray start runs under `env " + " ".join(f"{k}={v}" for k, v in exports)
                     + "` on every node (differs from the bash recipe)" if exports
                     else "--export-env: the runtime env has no ${VAR}s, nothing to export")
    hosts = spec.hostfile.hosts
    if len(cluster.workers) == len(hosts):
        notes.append(f"head {cluster.head} is not in {spec.hostfile.path}: every listed host joins as a worker")
    gpus = cluster.gpus_per_node
    if spec.variant.profile == "bash" and spec.gpus_per_node is None and gpus != 8 \
            and {h.slots for h in hosts} == {gpus}:
        notes.append(f"{gpus} GPUs per node from the hostfile's slots= (the bash recipe ignores slots and uses 8)")
    if spec.no_wait:
        notes.append("--no-wait: `ray job submit --no-wait` prints the job id and returns (deviation)")
    if cluster.job_host != "127.0.0.1":
        notes.append(f"--dashboard-host {cluster.dashboard_host}: the job is submitted to http://"
                     f"{url_host(cluster.job_host)}:{cluster.dashboard_port} (the dashboard does not listen on "
                     "127.0.0.1)")
    if spec.external_ray:
        notes.append(f"--external-ray: the job goes to the Ray cluster already running at {cluster.job_address}: no "
                     "Ray cleanup, no ray start anywhere, nothing stopped after a failure")
    if spec.hold_workers and cluster.workers:
        notes.append("--hold-workers: an ssh session to every worker stays open until the job ends "
                     "(until up returns)")
    return tuple(n for n in notes if n), _warnings(spec, cluster)


def _checkpoint_note(spec: LaunchSpec, job: JobFacts) -> str:
    """Where the trainer loads from and saves to ("" when there is nothing to say)."""
    if spec.checkpoint_dir is not None:
        return (f"--load/--save = {spec.checkpoint_dir} every {spec.save_interval} rollouts; "
                f"until it holds latest_checkpointed_iteration.txt the trainer loads --ref-load {job.ref_load}")
    if job.load is None and job.save is None:
        return f"effective --load = {job.ref_load}; no checkpoints are saved"
    if job.load:
        resume = " (--run-id names the run to resume)" if spec.run_id is None and spec.variant.profile == "python" \
            else ""
        return (f"--load/--save = {job.load}: until it holds latest_checkpointed_iteration.txt the trainer "
                f"loads --ref-load {job.ref_load}{resume}")
    return ""


def _warnings(spec: LaunchSpec, cluster: ClusterFacts) -> tuple[str, ...]:
    warnings = []
    base_dir = spec.base_dir or ""
    if any(c.isspace() for c in base_dir):
        warnings.append(f"BASE_DIR {base_dir!r} contains whitespace: kept as one word here; "
                        f"the bash recipe would split each path into {len(base_dir.split())} words")
    if cluster.dashboard_host in WILDCARDS and not spec.external_ray:
        warnings.append(
            f"the Ray dashboard on the head listens on {url_host(cluster.dashboard_host)}:{cluster.dashboard_port} "
            "(all interfaces, as in the bash recipe) and accepts job submissions without authentication from "
            "anyone who can reach it: --dashboard-host 127.0.0.1 (or the head's address) limits it"
        )
    return tuple(warnings)
