"""Building a plan: a ``LaunchSpec`` in, the ``Plan`` of its launch out (pure: no I/O, no SSH).

It flows one way, each stage taking what the one before made:

1. the hosts: the head, the workers in hostfile order, GPUs per node (``hostfile.py``);
2. the profile: its recipe, model and job for this cluster (``profiles.py``);
3. the variant: FP8, MTP, MIS, R3... on that job (``variants.py``);
4. the overrides: ``--set``/``--unset``/``--extra-args``/``--env`` (``overrides.py``);
5. the placeholders filled: train args, runtime env, the cluster's facts and its steps
   (``launch_steps.py``);
6. what a reader is told of it (``plan_notes.py``).
"""

from __future__ import annotations

import re

from glm45_launch.core.argdiff import recipe_changes
from glm45_launch.core.hostfile import cluster_workers, valid_hostname
from glm45_launch.core.job_facts import JobFacts
from glm45_launch.core.launch_steps import cluster_facts, launch_steps, stop_job, teardown_steps
from glm45_launch.core.overrides import apply_overrides
from glm45_launch.core.plan import DEFAULT_RUN_ID, FRAMEWORKS, Dirs, LaunchSpec, Plan, TrainArgs
from glm45_launch.core.plan_notes import plan_notes, plan_settings
from glm45_launch.core.profiles import OWN_DIRS, profile_job
from glm45_launch.core.runtime_env import env_refs, resolve_env
from glm45_launch.core.variants import apply_variant
from glm45_launch.errors import LaunchError
from glm45_launch.recipes import ModelSpec, Recipe, fill, fill_all
from glm45_launch.recipes.hardware import Hardware, get_hardware

_SSH_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


def build_plan(spec: LaunchSpec) -> Plan:
    """Turn ``spec`` into the ordered steps of a launch (pure)."""
    head, base_dir, hw = _check(spec)
    workers = cluster_workers(spec.hostfile, head)
    gpus = spec.hostfile.gpus_per_node(spec.gpus_per_node, hw)
    job = profile_job(spec, hw, gpus, nodes=1 + len(workers))
    varied = apply_variant(job.recipe, spec.variant, hw, gpus, job.engine_gpus)
    applied = apply_overrides(varied.recipe, spec.overrides)
    variant_changes = () if spec.variant.is_default else recipe_changes(job.plain, varied.recipe)
    recipe = applied.recipe

    values = _placeholders(spec, recipe, job.model, base_dir, gpus)
    train = _train_args(spec, recipe, values)
    env_vars, refs, exports = _runtime_env(spec, recipe, values)
    cluster = cluster_facts(spec, recipe, values, workers, gpus)
    steps = launch_steps(spec, recipe, cluster, values, train, env_vars, exports, varied.files)
    on_failure, on_interrupt = () if spec.external_ray else teardown_steps(cluster), (stop_job(cluster),)

    facts = JobFacts.of(train.argv)
    notes, warnings = plan_notes(spec, cluster, facts, refs, exports)
    variant = () if spec.variant.is_default else (("variant", spec.variant.summary()),)
    return Plan(
        steps=steps, spec=spec, cluster=cluster, train=train, env_vars=env_vars, recipe_name=recipe.name,
        model=job.model, job=facts, on_failure=on_failure, on_interrupt=on_interrupt,
        dirs=Dirs(model=values["model_dir"], data=values["data_dir"], model_local=values["model_local_dir"],
                  output=values["output_dir"]),
        settings=plan_settings(spec, cluster, train, recipe.name, job.model,
                               variant + tuple((k, fill(v, values)) for k, v in job.settings), values),
        notes=tuple(fill(n, values) for n in (*job.notes, *varied.notes)) + notes,
        warnings=job.warnings + applied.warnings + warnings,
        overrides=tuple(c.filled(values) for c in applied.changes),
        variant_changes=tuple(c.filled(values) for c in variant_changes),
    )


def _check(spec: LaunchSpec) -> tuple[str, str | None, Hardware | None]:
    """The spec's own values, each refused in one line naming its option; returns the head, the
    base dir and the hardware."""
    own_dirs = spec.variant.profile in OWN_DIRS
    if not spec.head:
        raise LaunchError(f"no head address: set {'MASTER_ADDR' if own_dirs else 'MLP_WORKER_0_HOST'} or give --head")
    if not spec.base_dir and not own_dirs:
        raise LaunchError("no base dir: set BASE_DIR or give --base-dir")
    if spec.framework not in FRAMEWORKS:
        raise LaunchError(f"--framework: {spec.framework!r} is not one of {', '.join(FRAMEWORKS)}")
    if not _SSH_USER.match(spec.ssh_user):
        raise LaunchError(f"--ssh-user: {spec.ssh_user!r} is not a valid user name")
    if spec.save_interval < 1:
        raise LaunchError(f"--save-interval: must be >= 1, got {spec.save_interval}")
    if spec.actor_num_nodes is not None and spec.actor_num_nodes < 1:
        raise LaunchError(f"--actor-num-nodes: must be >= 1, got {spec.actor_num_nodes}")
    if not spec.entry.strip() or spec.entry != spec.entry.strip():
        raise LaunchError(f"--entry: {spec.entry!r} is not a script path")
    if spec.checkpoint_dir is not None and not spec.checkpoint_dir.strip():
        raise LaunchError("--checkpoint-dir: empty path")
    if spec.socket_ifname is not None and not _IFNAME.fullmatch(spec.socket_ifname):
        raise LaunchError(f"--socket-ifname: {spec.socket_ifname!r} is not an interface name")
    if spec.hold_workers and spec.no_wait:
        raise LaunchError("--hold-workers with --no-wait: up returns once the job is submitted, and the held "
                          "ssh sessions end with it; drop one of them")
    hw = get_hardware(spec.variant.hardware) if spec.variant.hardware is not None else None
    if not valid_hostname(spec.head):
        raise LaunchError(f"--head: {spec.head!r} is not an IPv4/IPv6 address or a DNS name")
    if spec.dashboard_host is not None and not valid_hostname(spec.dashboard_host):
        raise LaunchError(f"--dashboard-host: {spec.dashboard_host!r} is not an address")
    return spec.head, spec.base_dir, hw


def _placeholders(spec: LaunchSpec, recipe: Recipe, model: ModelSpec, base_dir: str | None,
                  gpus: int) -> dict[str, str]:
    """The values of the recipe's ``{placeholders}`` for this launch: the spec's, else the
    recipe's defaults, else the base dir (a profile with paths of its own may have none)."""
    assert spec.head is not None
    defaults = recipe.defaults
    output_dir = _path(spec.output_dir or defaults.get("output_dir") or base_dir or "/")
    base = base_dir or output_dir
    values = {**defaults}
    values.update(
        base_dir=base, head=spec.head, gpus_per_node=str(gpus), framework=spec.framework,
        ckpt_name=model.checkpoint_name, entry=spec.entry,
        entry_path=spec.entry if spec.entry.startswith("/") else f"{spec.workdir.rstrip('/')}/{spec.entry}",
        model_dir=_path(spec.model_dir or defaults.get("model_dir") or base),
        data_dir=_path(spec.data_dir or defaults.get("data_dir") or base),
        model_local_dir=_path(spec.model_local_dir or base), output_dir=output_dir,
        run_id=spec.run_id or DEFAULT_RUN_ID, wandb_key=spec.wandb_key or "", megatron_path=spec.megatron_path,
    )
    if spec.num_rollout is not None:
        values["num_rollout"] = str(spec.num_rollout)
    if spec.actor_num_nodes is not None:
        values["actor_num_nodes"] = str(spec.actor_num_nodes)
    if spec.dashboard_host is not None:
        if not any("{dashboard_host}" in w for w in recipe.head_start):
            raise LaunchError(f"--dashboard-host: the {recipe.name} recipe's head start passes no --dashboard-host "
                              f"(Ray's default, {values['dashboard_host']}, is what it binds)")
        values["dashboard_host"] = spec.dashboard_host
    return values


def _path(path: str) -> str:
    return path.rstrip("/") or "/"


def _train_args(spec: LaunchSpec, recipe: Recipe, values: dict[str, str]) -> TrainArgs:
    """The job's entrypoint and train.py's arguments by group, filled (``--checkpoint-dir`` adds
    ``--load``/``--save`` at the end of CKPT)."""
    groups = dict(recipe.groups)
    if spec.checkpoint_dir is not None:
        groups["CKPT"] = tuple(groups.get("CKPT", ())) + (
            "--load", spec.checkpoint_dir, "--save", spec.checkpoint_dir, "--save-interval", str(spec.save_interval),
        )
    return TrainArgs(
        entry=fill_all(recipe.entry, values), prefix=fill_all(recipe.train_prefix, values),
        groups=tuple((g, fill_all(groups.get(g, ()), values)) for g in recipe.group_order),
    )


Env = tuple[tuple[str, str], ...]


def _runtime_env(spec: LaunchSpec, recipe: Recipe, values: dict[str, str]) -> tuple[Env, tuple[str, ...], Env]:
    """The runtime env (literal ``${VAR}``s for Ray to expand on each node, unless
    ``--resolve-env``), the ``${VAR}``s it names, and what ``--export-env`` exports."""
    env_vars = tuple((k, fill(v, values)) for k, v in recipe.env_vars)
    refs = tuple(env_refs(env_vars))
    known = {"MASTER_ADDR": values["head"], "MLP_WORKER_0_HOST": values["head"]}  # as the orchestrator sets them
    if spec.socket_ifname:
        known["MLP_SOCKET_IFNAME"] = spec.socket_ifname
    if spec.resolve_env:
        env_vars = tuple(resolve_env(env_vars, known, "--resolve-env"))
    if not spec.export_env:
        return env_vars, refs, ()
    missing = [r for r in refs if r not in known]
    if missing:
        raise LaunchError(f"--export-env: no value for ${{{missing[0]}}} (give --socket-ifname)")
    return env_vars, refs, tuple((r, known[r]) for r in refs)
